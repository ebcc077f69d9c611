"""The detection seam: what the pipeline asks of every detector.

The pipeline feeds each detector the observations of one (proxy, audit, segment) test as they
arrive and asks for a :class:`Verdict` on every detect tick. Proxy values arrive already
*oriented* (multiplied by -1 for ``direction: lower``), so a detector may always assume that a
larger proxy claims a better output. The ok/warn/alarm state machine, its events and the
exported series belong to the pipeline; a detector only reports its current verdict.

Detectors follow River's anatomy: hyper-parameters in ``__init__``, ``update``-style methods that
mutate, a read-only verdict. They must be deterministic for a given sequence of calls (``replay``
promises the same events for the same input) and serialisable (``state_dict``/``load_state``) so a
restart resumes where the last detect tick left off.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Literal

State = Literal["ok", "warn", "alarm"]
STATES: tuple[State, ...] = ("ok", "warn", "alarm")
STATE_CODES: dict[str, int] = {"ok": 0, "warn": 1, "alarm": 2}


WARMING_UP = "warming up"  # the reason a verdict gives while its detector builds its reference


def _reported(value: float | None) -> float | None:
    """NaN/inf as None: events are JSON, and JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Estimates:
    """What a verdict estimated, besides its statistic: the facts events and series report.

    ``None`` means this detector does not estimate the field (it is left out of events); NaN means
    it does but cannot yet (an empty window, a constant proxy), and is reported as ``null``. Counts
    of audited outputs keep the names the event format has always had (``reference_pairs``, ...).
    """

    samples: int | None = None  # audited outputs the verdict used (window, or reference so far)
    gap: float | None = None  # audit predicted from the proxy minus audit observed, window mean
    gap_lower: float | None = None  # 95% interval of the gap
    gap_upper: float | None = None
    warn_threshold: float | None = None  # of the statistic, on the threshold's scale
    level_statistic: float | None = None  # the level CUSUMs' statistic, on that scale
    slope_statistic: float | None = None  # the slope CUSUM's statistic, on that scale
    curve_statistic: float | None = None  # the curvature CUSUM's statistic, on that scale
    rank_corr_reference: float | None = None  # Spearman of proxy and audit in the reference
    rank_corr_window: float | None = None  # ... and in the recent window
    reference_pairs: int | None = None  # audited outputs in (or wanted for) the reference
    late_pairs_ignored: int | None = None  # audited outputs older than the last rebaseline
    proxy_shift: float | None = None  # recent mean proxy, reference s.d. from the reference mean
    beyond_range_fraction: float | None = None  # share of the window above the reference's range
    since: float | None = None  # oldest output of the current excursion (NaN: no excursion)
    excursion_pairs: int | None = None  # audited outputs in the current excursion
    excursion_gap: float | None = None  # weighted mean gap over the excursion

    def reported(self, names: Iterable[str] | None = None) -> dict[str, float | int | None]:
        """The estimated fields by name (all, sorted: the extra keys of an event; or only ``names``),
        NaN as None; fields this detector does not estimate (None) are left out."""
        return {name: _reported(value) for name in (_ESTIMATE_NAMES if names is None else names)
                if (value := getattr(self, name)) is not None}


_ESTIMATE_NAMES = tuple(sorted(f.name for f in fields(Estimates)))


class Verdict:
    """A detector's answer on one detect tick.

    ``statistic`` and ``threshold`` are the decision statistic and the alarm threshold it is
    compared with (NaN when not applicable, e.g. while warming up). ``reason`` is a short
    machine-friendly word (:data:`WARMING_UP`, "proxy_inflated", "audit_dropped", "relation_lost", "gains_bending",
    ...) that events carry; code tests ``warming_up``, never the word. ``estimates`` are the facts
    the pipeline copies into events and exported series.

    A detector may pass ``estimates`` as a function: the costly ones (window statistics) are then
    computed only when first read (an event, a history row, a scrape), not on every detect tick;
    the function must capture what it needs, since the detector moves on. ``eager`` are the
    estimates known without calling it (the deferred fields are ``None`` there).
    """

    __slots__ = ("_estimates", "eager", "reason", "state", "statistic", "threshold", "warming_up")

    def __init__(self, state: State, statistic: float = math.nan, threshold: float = math.nan, reason: str = "",
                 estimates: Estimates | Callable[[], Estimates] | None = None, warming_up: bool = False,
                 eager: Estimates | None = None) -> None:
        given = Estimates() if estimates is None else estimates
        for name, value in (("state", state), ("statistic", statistic), ("threshold", threshold),
                            ("reason", reason), ("warming_up", warming_up), ("_estimates", given),
                            ("eager", eager if eager is not None else given if isinstance(given, Estimates)
                             else Estimates())):
            object.__setattr__(self, name, value)

    state: State
    statistic: float
    threshold: float
    reason: str
    warming_up: bool
    eager: Estimates
    _estimates: Estimates | Callable[[], Estimates]

    @property
    def estimates(self) -> Estimates:
        given = self._estimates
        if not isinstance(given, Estimates):
            given = given()
            object.__setattr__(self, "_estimates", given)
        return given

    def estimated(self, names: frozenset[str]) -> Estimates:
        """Estimates with at least the fields ``names`` known: deferred estimates that can compute a
        part (a ``part(names)`` method, agent/detect/window.py) skip what was not asked for."""
        given = self._estimates
        part = None if isinstance(given, Estimates) else getattr(given, "part", None)
        return self.estimates if part is None else part(names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Verdict is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return (self.state, self.statistic, self.threshold, self.reason, self.estimates, self.warming_up)

    def __repr__(self) -> str:
        return (f"Verdict(state={self.state!r}, statistic={self.statistic!r}, threshold={self.threshold!r}, "
                f"reason={self.reason!r}, estimates={self.estimates!r}, warming_up={self.warming_up!r})")

    @classmethod
    def warming(cls, estimates: Estimates | None = None) -> Verdict:
        """The verdict of a detector still building its reference: warn, never alarm."""
        return cls("warn", reason=WARMING_UP, estimates=Estimates() if estimates is None else estimates,
                   warming_up=True)


@dataclass(frozen=True)
class ReferenceInfo:
    """Where a detector's current reference came from: fitted here on the audited outputs from
    ``first_ts`` to ``last_ts``, or imported from a reference artifact (which says the same of the
    agent that fitted it)."""

    origin: Literal["fitted", "imported"]
    first_ts: float | None
    last_ts: float | None


@dataclass(frozen=True)
class ReferenceLine:
    """A detector's reference relation as a line on the *oriented* proxy, for evidence and plots.

    ``predict`` is what the reference promises for a proxy value; ``prediction_se`` its standard
    error from the fit; ``scale`` the residual s.d. around the line on the reference.
    """

    intercept: float
    slope: float
    lower: float  # predictions are clipped to [lower, upper] (0/1 audits: [0, 1])
    upper: float
    scale: float
    cov: tuple[float, float, float]  # (intercept, intercept-slope, slope) covariance
    proxy_mean: float
    proxy_sd: float
    proxy_min: float
    proxy_max: float
    audit_mean: float
    pairs: int
    baseline_ts: float | None  # the reference was built from audited outputs from here on

    def predict(self, proxy: float) -> float:
        return min(max(self.intercept + self.slope * proxy, self.lower), self.upper)

    def prediction_se(self, proxy: float) -> float:
        aa, ab, bb = self.cov
        return math.sqrt(max(aa + 2 * proxy * ab + proxy * proxy * bb, 0.0))


@dataclass(frozen=True)
class PairObservation:
    """One audited output of this test: its oriented proxy value, audit value and sampling weight."""

    ts: float
    proxy: float
    audit: float
    weight: float = 1.0
    segment: str | None = None  # the output's segment (None: not segmented)


class Detector(ABC):
    """Contract for one (proxy, audit, segment) test."""

    @abstractmethod
    def observe_proxy(self, ts: float, value: float) -> None:
        """Every output's oriented proxy value, audited or not, in arrival order."""

    @abstractmethod
    def observe_pair(self, obs: PairObservation) -> None:
        """An audited output, in the order outputs were audited (output and audit joined)."""

    @abstractmethod
    def verdict(self, now: float) -> Verdict:
        """The verdict at virtual or wall time ``now``; called once per detect tick."""

    @abstractmethod
    def rebaseline(self, now: float) -> None:
        """Forget the reference: the next pairs build a new one (after an intended change)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, enough for :meth:`load_state` to resume exactly."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` or :meth:`checkpoint_state` returned."""

    def checkpoint_state(self) -> dict[str, Any]:
        """:meth:`state_dict` for a checkpoint: a large ring buffer may be left as a
        :class:`~agent.core.Ring`, which the store saves in chunks, only those that changed since the
        last checkpoint (agent/store/detectors.py); everything else JSON-serialisable."""
        return self.state_dict()

    def reference_info(self) -> ReferenceInfo | None:
        """The current reference's origin and time span; None while warming up (or no reference)."""
        return None

    def pinned_reference(self) -> dict[str, Any] | None:
        """What a fresh detector needs, with :meth:`load_reference`, to detect exactly as this one
        did right after it fitted its reference (JSON-serialisable); None while warming up."""
        return None

    def load_reference(self, pinned: dict[str, Any]) -> None:
        """Start from a pinned reference instead of warming up (ValueError when it does not fit)."""
        raise ValueError(f"{type(self).__name__} cannot start from a pinned reference")

    @property
    def pools_segments(self) -> bool:
        """Whether, as a whole-stream test, it gives its segments their references
        (:meth:`segment_reference`) and they must not fit their own."""
        return False

    def segment_reference(self, segment: str) -> dict[str, Any] | None:
        """The pinned reference a segment's detector starts from (:meth:`adopt_reference`); None
        while there is none (yet)."""
        return None

    def adopt_reference(self, pinned: dict[str, Any]) -> None:
        """Take the reference a whole-stream test made for this segment (its origin carried over)."""
        self.load_reference(pinned)

    def sufficient_statistics(self) -> dict[str, float]:
        """Monotone sums (counters) that Prometheus can add across replicas; empty by default."""
        return {}

    def reference_line(self) -> ReferenceLine | None:
        """The reference as a line, once there is one (evidence and the report); None by default."""
        return None
