"""What a decoupling verdict estimates over its recent window of audited outputs: a pure function
of the reference and the window's proxies, audits and weights."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from agent.core import Ring
from agent.detect.base import Estimates
from agent.detect.reference import ReferenceRelation
from agent.stats import spearman

_Z95 = 1.959963984540054


def finite(x: float) -> float:
    """NaN for NaN/inf: an estimate that is not known (events report it as null)."""
    return float(x) if math.isfinite(x) else math.nan


def json_float(x: float | None) -> float | None:
    """A JSON-friendly float: None for NaN/inf."""
    return None if x is None or not math.isfinite(x) else float(x)


#: the fields only the full window estimates give (a rank correlation costs more than the rest)
RANKED_FIELDS = frozenset({"rank_corr_window", "beyond_range_fraction"})


def window_gap(ref: ReferenceRelation, p: np.ndarray, a: np.ndarray, w: np.ndarray) -> Estimates:
    """Samples and the weighted gap with its 95% interval, over the window."""
    n = len(p)
    if n == 0:
        return Estimates(samples=0, gap=math.nan, gap_lower=math.nan, gap_upper=math.nan)
    lo, hi = ref.bounds_
    g = np.clip(ref.intercept_ + ref.slope_ * p, lo, hi) - a
    sw = float(w.sum())
    gap = float(np.dot(w, g) / sw)
    se2 = float(np.dot(w * w, (g - gap) ** 2)) / (sw * sw)
    # Reference error in audit units at the window's mean proxy (intercept and slope).
    ref_se = ref.prediction_se(float(np.dot(w, p) / sw))
    half = _Z95 * math.sqrt(se2 + ref_se * ref_se)
    return Estimates(samples=n, gap=gap, gap_lower=gap - half, gap_upper=gap + half)


def window_estimates(ref: ReferenceRelation, p: np.ndarray, a: np.ndarray, w: np.ndarray,
                     gap: Estimates | None = None) -> Estimates:
    """Weighted gap with a 95% interval (``gap``: already computed), rank correlation and range, over the window."""
    gap = window_gap(ref, p, a, w) if gap is None else gap
    if len(p) == 0:
        return replace(gap, rank_corr_window=math.nan, beyond_range_fraction=math.nan)
    return replace(gap, rank_corr_window=finite(spearman(p, a)),
                   beyond_range_fraction=float(np.mean(p > ref.proxy_max_)))


class DeferredWindow:
    """The window estimates of one moment, computed on first read (an event, a history row, a
    scrape) rather than on every detect tick: most verdicts are never read past their state and
    statistic, and a history row reads only the gap. Holds a copy of the filled part of the
    window ring buffer's proxy, audit and weight rows, since the detector goes on filling it."""

    __slots__ = ("_buf", "_count", "_gap", "_pos", "_ref", "_value")

    def __init__(self, ref: ReferenceRelation, buf: np.ndarray, pos: int, count: int) -> None:
        """``buf``: the ring's rows ts, proxy, audit, weight; ``pos`` its next slot, ``count`` slots filled."""
        full = count == buf.shape[1]
        self._ref, self._buf, self._pos, self._count = ref, buf[1:, :count].copy(), pos if full else 0, count
        self._gap: Estimates | None = None
        self._value: Estimates | None = None

    def _ordered(self) -> np.ndarray:
        """The window oldest first (a full ring is put in order once)."""
        self._buf = ordered_window(self._buf, self._pos, self._count)
        self._pos = 0
        return self._buf

    def gap(self) -> Estimates:
        """Only samples, gap, gap_lower and gap_upper (what a history row plots)."""
        if self._gap is None:
            buf = self._ordered()
            self._gap = window_gap(self._ref, buf[0], buf[1], buf[2])
        return self._gap

    def value(self) -> Estimates:
        if self._value is None:
            gap = self.gap()
            buf = self._ordered()
            self._value = window_estimates(self._ref, buf[0], buf[1], buf[2], gap)
            self._buf = buf[:0]  # no longer needed
        return self._value


class DeferredEstimates:
    """A verdict's deferred estimates: the window's, with the facts known when it was given;
    :meth:`part` skips the rank correlation when the reader asks for none of :data:`RANKED_FIELDS`."""

    __slots__ = ("_known", "_window")

    def __init__(self, window: DeferredWindow, known: dict[str, Any]) -> None:
        self._window, self._known = window, known

    def __call__(self) -> Estimates:
        return replace(self._window.value(), **self._known)

    def part(self, names: frozenset[str]) -> Estimates:
        if names & RANKED_FIELDS:
            return self()
        g = self._window.gap()
        return Estimates(samples=g.samples, gap=g.gap, gap_lower=g.gap_lower, gap_upper=g.gap_upper, **self._known)


def ordered_window(buf: np.ndarray, pos: int, count: int) -> np.ndarray:
    """A window ring oldest first: a full ring rolled to its next slot, one not yet full as filled."""
    if count < buf.shape[1] or pos == 0:
        return buf[:, :count]
    return np.concatenate((buf[:, pos:], buf[:, :pos]), axis=1)  # np.roll, in a fifth of the time


def restore_window(buf: np.ndarray, state: dict[str, Any]) -> tuple[int, int]:
    """Fill a detector's window ring ``buf`` (rows, size) from its saved state; returns (pos, count).

    A checkpoint holds the ring slot for slot (a :class:`~agent.core.Ring`); ``state_dict`` (and
    every state saved before checkpoints kept rings) holds the window oldest first, as lists.
    """
    ring = state.get("ring")
    if isinstance(ring, Ring):
        if np.shape(ring.buf) != buf.shape:
            raise ValueError(f"detector window ring of shape {np.shape(ring.buf)}, expected {buf.shape}")
        buf[:] = ring.buf
        return int(ring.pos), int(ring.count)
    win = np.asarray(state["window"], dtype=float).reshape(buf.shape[0], -1)
    m = win.shape[1]
    buf[:, :m] = win
    return m % buf.shape[1], m
