"""The explanation in sentences: what moved, since when, and what the reference promised.

"since 2026-09-21 14:02 UTC the thumbs_up rose from 0.59 to 0.70 while the rubric fell from 3.54
to 2.93; at this proxy level the reference promises 3.60 ± 0.10."
"""

from __future__ import annotations

from datetime import UTC, datetime

from agent.explain import REASONS
from agent.report.data import PairData, Values

Z95 = 1.959963984540054



def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def reason_words(reason: str) -> str:
    return REASONS.get(reason, reason or "-")


def _mean(values: Values, column: int) -> float:
    total = sum(v[3] for v in values)
    return sum(v[column] * v[3] for v in values) / total


def _moved(before: float, after: float) -> str:
    tolerance = 1e-3 * max(abs(before), abs(after), 1.0)
    if after > before + tolerance:
        return f"rose from {before:.3g} to {after:.3g}"
    if after < before - tolerance:
        return f"fell from {before:.3g} to {after:.3g}"
    return f"stayed at {after:.3g}"


def headline(pair: PairData) -> str:
    """The pair's state in one sentence."""
    verdict = pair.verdict
    if verdict is not None and verdict.warming_up:
        est = verdict.estimates
        return (f"{pair.name} is warming up: {est.samples or 0} of {est.reference_pairs or '?'} audited outputs "
                "for its reference.")
    if pair.state == "alarm":
        return (f"{pair.name} ALARMED at {when(pair.state_since)}: "
                f"{reason_words(verdict.reason if verdict else '')}.")
    if pair.state == "warn":
        why = reason_words(verdict.reason if verdict else "")
        return f"{pair.name} is in warn since {when(pair.state_since)}: {why}."
    return f"{pair.name} is ok: the audits follow what the reference predicts from the proxy."


def explanation(pair: PairData) -> list[str]:
    """The headline, what moved during the excursion, and the gap with its interval."""
    sentences = [headline(pair)]
    line = pair.line
    if line is not None and pair.excursion and pair.reference:
        proxy, audit, _ = pair.key
        p0, p1 = _mean(pair.reference, 1), _mean(pair.excursion, 1)
        a0, a1 = _mean(pair.reference, 2), _mean(pair.excursion, 2)
        oriented = pair.direction * p1
        promise, error = line.predict(oriented), Z95 * line.prediction_se(oriented)
        lower = " (lower is better)" if pair.direction < 0 else ""
        sentences.append(
            f"Since {when(pair.excursion_since)} the {proxy}{lower} {_moved(p0, p1)} while the {audit} "
            f"{_moved(a0, a1)} ({len(pair.excursion)} audited outputs); at this proxy level the reference "
            f"promises {promise:.3g} ± {error:.2g}.")
    est = pair.verdict.estimates if pair.verdict is not None else None
    if est is not None and est.gap is not None and est.gap == est.gap and est.gap_lower is not None:
        sentences.append(f"Over the last {est.samples} audited outputs the audit is {est.gap:.3g} below the "
                         f"proxy's promise (95% interval {est.gap_lower:.3g} to {est.gap_upper:.3g}).")
    return sentences
