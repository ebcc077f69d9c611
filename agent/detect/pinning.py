"""A pinned reference: the part of a decoupling detector's state that is fixed from its fit until its
next rebaseline, as a JSON object a fresh detector can start from.

After the fit a detector's reference line, its CUSUMs' reference values, thresholds and
extrapolation allowances never change; everything else (statistics, window, EWMAs) starts from the
same empty values at every fit. So a fresh detector given these facts is in exactly the state the
fitting detector was in right after its fit, and fed the same audited outputs it takes the same
decisions. The thresholds are carried, not recomputed: they depend on the reference's own scores,
which are not part of its saved state (:meth:`ReferenceRelation.to_dict`).
"""

from __future__ import annotations

import math
from typing import Any

from agent.detect.reference import ReferenceRelation

PINNED_VERSION = 1


def pin(params: dict[str, Any], ref: ReferenceRelation, ks: dict[str, float], thresholds: dict[str, list[float]],
        allowance: dict[str, list[float]], span: list[float] | None) -> dict[str, Any]:
    """The pinned reference of a fitted detector with these hyper-parameters."""
    return {"version": PINNED_VERSION, "params": dict(params), "reference": ref.to_dict(), "ks": dict(ks),
            "thresholds": {k: list(v) for k, v in thresholds.items()},
            "allowance": {k: list(v) for k, v in allowance.items()},
            "span": None if span is None else [float(span[0]), float(span[1])]}


def unpin(pinned: Any, params: dict[str, Any]) -> tuple[ReferenceRelation, dict[str, float], dict[str, list[float]],
                                                       dict[str, list[float]], list[float] | None]:
    """(reference, ks, thresholds, allowance, span) of a pinned reference made for ``params``;
    ValueError naming what is wrong (another version, other hyper-parameters, a broken field)."""
    if not isinstance(pinned, dict) or pinned.get("version") != PINNED_VERSION:
        version = pinned.get("version") if isinstance(pinned, dict) else None
        raise ValueError(f"unknown pinned reference version {version!r} (this agent reads {PINNED_VERSION})")
    theirs = pinned.get("params")
    if not isinstance(theirs, dict):
        raise ValueError("pinned reference has no params")
    for name in sorted(set(params) | set(theirs)):
        if theirs.get(name) != params.get(name):
            raise ValueError(f"was fitted with {name}={theirs.get(name)!r}, this detector has {params.get(name)!r}")
    try:
        ref = ReferenceRelation.from_dict(pinned["reference"])
        ks = {str(k): float(v) for k, v in pinned["ks"].items()}
        thresholds = {str(k): [float(x) for x in v] for k, v in pinned["thresholds"].items()}
        allowance = {str(k): [float(x) for x in v] for k, v in pinned["allowance"].items()}
        span = pinned.get("span")
        span = None if span is None else [float(span[0]), float(span[1])]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"pinned reference is incomplete or malformed ({type(err).__name__}: {err})") from None
    if set(ks) != set(thresholds) or any(len(v) != 2 or not all(map(math.isfinite, v)) for v in thresholds.values()):
        raise ValueError("pinned reference's thresholds do not match its CUSUMs")
    return ref, ks, thresholds, allowance, span


def fit_summary(ref: ReferenceRelation) -> dict[str, Any]:
    """What an operator reviews of a reference, in oriented proxy units (larger proxy = "better")."""
    return {"n": int(ref.n_), "n_effective": float(ref.n_eff_), "proxy_mean": float(ref.proxy_mean_),
            "audit_mean": float(ref.audit_mean_), "slope": float(ref.slope_), "intercept": float(ref.intercept_),
            "residual_sd": float(ref.scale_), "proxy_min": float(ref.proxy_min_),
            "proxy_max": float(ref.proxy_max_), "rank_corr": _f(ref.rank_corr_)}


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
