"""A placeholder detector: the simplest thing that exercises the detection seam.

It compares the mean audit of the most recent audited outputs with the mean of the first
``reference_size`` audited outputs and calls a drop of more than ``drop`` (in audit units) an alarm, half
of it a warning. It ignores the proxy entirely and has no false-alarm guarantee; it exists so the
pipeline, replay and exporter can be built and tested before the decoupling detector lands.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from agent.detect.base import Detector, Estimates, PairObservation, State, Verdict


class PlaceholderDetector(Detector):
    def __init__(self, reference_size: int = 50, window: int = 50, drop: float = 0.2) -> None:
        if reference_size < 1 or window < 1:
            raise ValueError("reference_size and window must be at least 1")
        self.reference_size = reference_size
        self.window = window
        self.drop = drop
        self._reset()

    def _reset(self) -> None:
        self._reference: list[float] = []
        self._recent: deque[float] = deque(maxlen=self.window)

    def observe_proxy(self, ts: float, value: float) -> None:
        return None

    def observe_pair(self, obs: PairObservation) -> None:
        if len(self._reference) < self.reference_size:
            self._reference.append(obs.audit)
        else:
            self._recent.append(obs.audit)

    def verdict(self, now: float) -> Verdict:
        if len(self._reference) < self.reference_size or len(self._recent) < self.window:
            used = len(self._reference) + len(self._recent)
            return Verdict.warming(Estimates(samples=used))
        ref = sum(self._reference) / len(self._reference)
        cur = sum(self._recent) / len(self._recent)
        gap = ref - cur
        state: State = "alarm" if gap > self.drop else "warn" if gap > self.drop / 2 else "ok"
        return Verdict(state, statistic=gap, threshold=self.drop,
                       reason="audit_dropped" if state != "ok" else "",
                       estimates=Estimates(gap=gap, samples=len(self._recent)))

    def rebaseline(self, now: float) -> None:
        self._reset()

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self._reference, "recent": list(self._recent)}

    def load_state(self, state: dict[str, Any]) -> None:
        self._reset()
        self._reference = [float(x) for x in state.get("reference", [])]
        self._recent.extend(float(x) for x in state.get("recent", []))
