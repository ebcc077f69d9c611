"""Builds the configured detector, with its per-test false-alarm budget.

The operator sets one number: ``detection.audits_between_false_alarms`` (γ) for the whole
deployment. Each of the P = proxies × audits pairs is tested on the whole stream and per segment.
Every audited output is one observation of the whole-stream test of each pair and of exactly one
segment test of each pair, so if every test has ARL₀ (in its own observations) the expected false
alarms per audit are P·(1/ARL₀ + 1/ARL₀). Setting ARL₀ = 2·P·γ keeps the total at 1/γ however many
segments there are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.detect.base import Detector
from agent.detect.placeholder import PlaceholderDetector


def per_test_arl(config: Config) -> float:
    return 2.0 * config.pair_count * config.detection.audits_between_false_alarms


def detector_settings(config: Config) -> dict[str, Any]:
    """What a detector was built with; saved with its state so a config change is noticed on restart."""
    d = config.detection
    if d.detector == "placeholder":
        return {"detector": "placeholder", "reference_pairs": d.reference_pairs}
    settings = {"detector": d.detector, "arl0": per_test_arl(config), "reference_pairs": d.reference_pairs,
                "shift": d.shift, "binary_shift": d.binary_shift, "warn_ratio": d.warn_ratio, "window": d.window}
    if d.reference_span is not None:  # only when set: the settings of existing stores stay what they were
        settings["reference_span"] = [d.reference_span.start, d.reference_span.end]
    return settings


def detector_factory(config: Config) -> Callable[[], Detector]:
    settings = config.detection
    if settings.detector == "placeholder":
        return lambda: PlaceholderDetector(reference_size=settings.reference_pairs)
    from agent.detect.pooled import PooledDetector

    arl0 = per_test_arl(config)
    given = settings.reference_span
    span = None if given is None else (given.start, given.end)
    return lambda: PooledDetector(arl0=arl0, reference_pairs=settings.reference_pairs, shift=settings.shift,
                                      binary_shift=settings.binary_shift, warn_ratio=settings.warn_ratio,
                                      window=settings.window, reference_span=span)
