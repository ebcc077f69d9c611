"""``plan``: how long warm-up and detection take at an audit rate, and which rate a target needs.

The maths is :mod:`agent.detect.planning` (audited pairs); this module turns pairs into time with
the operator's rate and the detect schedule, and prints the answer for a person (text) or a
program (``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.cli.common import _duration, _load
from agent.cli.parser import EXIT_OK, EXIT_USAGE
from agent.config import Config

DEFAULT_SHIFTS = (0.5, 1.0, 2.0)
#: Shifts (residual s.d.) the predictions were checked against the detector for (tests/test_plan.py);
#: outside it the plan still answers, with a note.
VALIDATED_SHIFTS = (0.5, 3.0)
FALSE_ALARM_SHARE = 0.1  # a delay beyond this share of the test's ARL0 is hardly a detection
WARMUP_NOTE_SECONDS = 86400.0  # check-config points to plan past a day of warm-up


@dataclass(frozen=True)
class ShiftPlan:
    """One step shift: its delay in audited pairs, in time, and the rate a target needs."""

    shift: float  # residual s.d.
    median_pairs: float  # typical (median) pairs from the step to the alarm
    mean_pairs: float  # Siegmund's ARL1 (unbiased reference)
    stream_seconds: float
    segment_seconds: float
    stream_rate: float  # audited pairs/s (whole stream) to alarm within the target
    segment_rate: float  # ... for a segment with the plan's share


@dataclass(frozen=True)
class Plan:
    audits_per_second: float
    detect_seconds: float
    reference_pairs: int
    pinned: bool  # detection.reference_file: pairs it covers start without warming up
    per_test_arl: float
    k: float
    threshold: float
    tau: float
    segment_share: float
    target_seconds: float
    warmup_stream_seconds: float
    warmup_segment_seconds: float
    warmup_stream_rate: float  # audited pairs/s for a first verdict within the target
    warmup_segment_rate: float
    shifts: list[ShiftPlan] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinities (never, no rate suffices) as null."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value
        return clean(asdict(self))  # type: ignore[no-any-return]


def build_plan(config: Config, rate: float, shifts: tuple[float, ...] = DEFAULT_SHIFTS, share: float = 0.1,
               target_seconds: float = 86400.0) -> Plan:
    """The plan for this config at ``rate`` audited pairs per second (whole stream)."""
    from agent.detect.factory import per_test_arl
    from agent.detect.planning import (
        first_verdict_pairs,
        mean_delay_pairs,
        median_delay_pairs,
        rate_for,
        seconds_for,
        typical_level_test,
    )

    d, tick = config.detection, config.schedule.detect_seconds
    arl0 = per_test_arl(config)
    test = typical_level_test(arl0, d.reference_pairs, d.shift, d.warn_ratio)
    pinned = d.reference_file is not None
    warm_stream = first_verdict_pairs(d.reference_pairs, 1.0, pinned)
    warm_segment = first_verdict_pairs(d.reference_pairs, share, pinned)
    rows = []
    for shift in shifts:
        pairs = median_delay_pairs(test, shift)
        rows.append(ShiftPlan(shift, pairs, mean_delay_pairs(test.h, test.k, shift),
                              seconds_for(pairs, rate, tick), seconds_for(pairs / share, rate, tick),
                              rate_for(pairs, target_seconds, tick), rate_for(pairs / share, target_seconds, tick)))
    return Plan(rate, tick, d.reference_pairs, pinned, arl0, test.k, test.h, test.tau, share, target_seconds,
                seconds_for(warm_stream, rate, tick), seconds_for(warm_segment, rate, tick),
                rate_for(warm_stream, target_seconds, tick), rate_for(warm_segment, target_seconds, tick), rows)


def _time(seconds: float) -> str:
    return "never" if not math.isfinite(seconds) else _duration(seconds)


def _rate(rate: float) -> str:
    if not math.isfinite(rate):
        return "none suffices"
    return f"{rate:.3g}/s ({rate * 3600:,.3g}/h)"


def render(plan: Plan) -> list[str]:
    """The plan for a person: warm-up, delays by shift, rates for the target."""
    seg = f"a {plan.segment_share:.0%} segment"
    target = _time(plan.target_seconds)
    lines = [
        f"plan for {_rate(plan.audits_per_second)} audited pairs on the whole stream; verdicts every "
        f"{_time(plan.detect_seconds)} (schedule.detect_seconds)",
        f"  each test: 1 false alarm per {plan.per_test_arl:,.0f} of its audited pairs; level CUSUM k = "
        f"{plan.k:g}, threshold h = {plan.threshold:.1f} (typical reference of {plan.reference_pairs} pairs)",
        "first verdict" + (" (detection.reference_file: the pairs it covers start from it at once):" if plan.pinned
                           else f" (after a reference of {plan.reference_pairs} audited pairs per test):"),
        f"  whole stream: {_time(plan.warmup_stream_seconds)}; {seg}: {_time(plan.warmup_segment_seconds)}",
        f"  audit rate for a first verdict within {target}: {_rate(plan.warmup_stream_rate)}; "
        f"for {seg}: {_rate(plan.warmup_segment_rate)}",
        "detection delay after a step drop of the audit (median pairs, Siegmund's mean; shift in residual s.d.):",
        f"  {'shift':>5} {'pairs':>8} {'(mean)':>8} {'whole stream':>14} {seg:>14}   audit rate to alarm within "
        f"{target}",
    ]
    for row in plan.shifts:
        lines.append(f"  {row.shift:>5g} {row.median_pairs:>8,.0f} {row.mean_pairs:>8,.0f} "
                     f"{_time(row.stream_seconds):>14} "
                     f"{_time(row.segment_seconds):>14}   {_rate(row.stream_rate)}; {seg}: {_rate(row.segment_rate)}")
    rare = [row.shift for row in plan.shifts if row.median_pairs > FALSE_ALARM_SHARE * plan.per_test_arl]
    if rare:
        lines.append(f"note: shift(s) {', '.join(f'{s:g}' for s in rare)} take a sizeable share of the pairs between "
                     "false alarms: they are not reliably told apart from noise at this budget")
    lo, hi = VALIDATED_SHIFTS
    outside = [row.shift for row in plan.shifts if not lo <= row.shift <= hi]
    if outside:
        lines.append(f"note: shift(s) {', '.join(f'{s:g}' for s in outside)} are outside {lo:g}-{hi:g} residual s.d., "
                     "where the prediction was checked against the detector; take them as rough")
    lines.append("note: add the audits' own latency (labels or judges arriving after the output); "
                 "a proxy inflated by x moves the residual by slope * x / residual s.d.")
    return lines


def cmd_plan(args: argparse.Namespace) -> int:
    import sys

    config = _load(args.config)
    if config.forward is not None:
        print("goodhart-agent: a forwarder does not detect; plan its gateway's config", file=sys.stderr)
        return EXIT_USAGE
    if config.detection.detector != "decoupling":
        print("goodhart-agent: detection.detector: plan models the decoupling detector only", file=sys.stderr)
        return EXIT_USAGE
    plan = build_plan(config, args.audits_per_second, tuple(args.shift or DEFAULT_SHIFTS), args.segment_share,
                      args.target_hours * 3600.0)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        for line in render(plan):
            print(line)
    return EXIT_OK


def warmup_note(config: Config, rate: float) -> str | None:
    """check-config's pointer to ``plan`` when the whole stream's warm-up at ``rate`` exceeds a day."""
    from agent.detect.planning import first_verdict_pairs, seconds_for

    d = config.detection
    seconds = seconds_for(first_verdict_pairs(d.reference_pairs, 1.0, d.reference_file is not None), rate,
                          config.schedule.detect_seconds)
    if seconds <= WARMUP_NOTE_SECONDS:
        return None
    return (f"note: warm-up takes {_time(seconds)} at {rate:g} audits/s ({d.reference_pairs} reference pairs); "
            "`goodhart-agent plan` shows detection delays and the audit rate a target needs")
