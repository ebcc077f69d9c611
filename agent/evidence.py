"""Evidence: the audited outputs behind a pair's current excursion, most adverse first.

Computed on demand from the store and the detector's reference line and excursion start (its
``since``), so nothing extra is kept and it survives restarts. The *residual* of an audited output
is its audit minus what the reference predicts from its proxy: negative when the audit fell short
of the proxy's promise, so the most adverse outputs come first.

The daemon answers from its live snapshot (``/v1/evidence``, through agent/view.py); the CLI and
the report read a state dir: :func:`read_snapshot` rebuilds the detectors from their checkpoint and
the store behind it, as a restart would, without writing anything.
"""

from __future__ import annotations

import math
from typing import Any

from agent.bank import DetectorBank, Snapshot
from agent.config import Config, EvidenceConfig
from agent.core import PairKey
from agent.detect.factory import detector_factory, detector_settings
from agent.store import Line, Store


def directions_of(config: Config) -> dict[str, float]:
    """+1 for a proxy where higher is better, -1 where lower is (the detectors see "better" as up)."""
    return {p.name: (-1.0 if p.direction == "lower" else 1.0) for p in config.proxies}


def _json_number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def excursion_start(snapshot: Snapshot, key: PairKey) -> float | None:
    """Where the current excursion began (its oldest audited output), or None when there is none."""
    verdict = snapshot.verdicts.get(key)
    since = verdict.estimates.since if verdict is not None else None
    return since if since is not None and math.isfinite(since) else None


def evidence(store: Store, snapshot: Snapshot, key: PairKey, directions: dict[str, float],
             settings: EvidenceConfig, limit: int | None = None) -> dict[str, Any] | None:
    """The CONTRACT's evidence document for ``key``; None when there is no such pair.

    Items are listed while the pair has an excursion (its CUSUM above zero: warn or alarm); an ok
    pair, or one still building its reference, lists none and says why in ``note``.
    """
    if key not in snapshot.states:
        return None
    proxy, audit, segment = key
    verdict = snapshot.verdicts.get(key)
    line = snapshot.lines.get(key)
    since = excursion_start(snapshot, key)
    doc: dict[str, Any] = {
        "proxy": proxy, "audit": audit, "segment": segment, "state": snapshot.states[key],
        "reason": verdict.reason if verdict is not None else "", "since": since,
        "statistic": _json_number(verdict.statistic) if verdict is not None else None,
        "threshold": _json_number(verdict.threshold) if verdict is not None else None,
        "items": []}
    if line is None:
        doc["note"] = "no reference yet (warming up): nothing to compare the audits with"
        return doc
    if since is None:
        doc["note"] = "no excursion: the audits follow what the reference predicts"
        return doc
    direction = directions.get(proxy, 1.0)
    count = max(1, min(limit or settings.max_items, settings.max_items))
    rows = store.adverse_pairs(proxy, audit, segment, since,
                               Line(line.intercept, line.slope, direction, line.lower, line.upper), count)
    texts = store.excerpts([r.id for r in rows]) if settings.keep_text else {}
    for row in rows:
        item: dict[str, Any] = {"id": row.id, "ts": row.ts, "segment": row.segment, "proxy": row.proxy_value,
                                "audit": row.audit_value, "predicted": row.predicted, "residual": row.residual,
                                "weight": row.weight}
        input_text, output_text = texts.get(row.id, (None, None))
        if input_text is not None:
            item["input"] = input_text
        if output_text is not None:
            item["output"] = output_text
        doc["items"].append(item)
    return doc


def read_snapshot(config: Config, store: Store, now: float | None = None) -> Snapshot:
    """The detectors' current verdicts from a store (a daemon's state dir, or a replay's), read only.

    Detectors resume from their checkpoint and are re-fed what the store received since, exactly
    as the daemon does at start; nothing is written back.
    """
    bank = DetectorBank(store, detector_factory(config), detector_settings(config), directions_of(config),
                        [a.name for a in config.audits])
    bank.load()
    bank.feed()
    latest = store.latest_ts()
    bank.judge(now if now is not None else latest if latest is not None else 0.0)
    return bank.snapshot
