"""The report's figures, drawn with matplotlib and inlined as PNG data URIs (no network, one file).

Figures are built with matplotlib's object API (no pyplot, no global state), so a report can be
rendered from an HTTP handler's thread. Each function takes a :class:`PairData` and returns a
data URI, or None when there is nothing to draw yet.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import random
from datetime import UTC, datetime
from typing import Any

from matplotlib.figure import Figure

from agent.report.data import PairData, Values
from agent.report.words import Z95

BINS = 60
STATE_CODE = {"ok": 0, "warn": 1, "alarm": 2}
COLOURS = {"audit": "#1f77b4", "promise": "#ff7f0e", "gap": "#7b3294", "alarm": "#d62728", "warn": "#f0ad4e",
           "reference": "#555555"}


def _time(ts: float) -> Any:
    """A time matplotlib plots as a date (typed Any: its stubs accept only numbers and arrays)."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def _uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def alarm_spans(pair: PairData, end: float) -> list[tuple[float, float, str]]:
    """(start, end, state) of every warn or alarm period in the pair's event history."""
    spans: list[tuple[float, float, str]] = []
    current: tuple[float, str] | None = None
    for event in sorted(pair.events, key=lambda e: e["ts"]):
        if current is not None:
            spans.append((current[0], event["ts"], current[1]))
            current = None
        if event["state"] in ("warn", "alarm") and event.get("reason") != "warming up":
            current = (event["ts"], event["state"])
    if current is not None:
        spans.append((current[0], max(end, current[0]), current[1]))
    return spans


def _mark(ax: Any, pair: PairData, end: float) -> None:
    """Shade warn and alarm periods; a dashed line at the start of the current excursion."""
    for start, stop, state in alarm_spans(pair, end):
        ax.axvspan(_time(start), _time(stop), color=COLOURS[state], alpha=0.15 if state == "alarm" else 0.08,
                   label=state)
    if pair.excursion_since is not None:
        ax.axvline(_time(pair.excursion_since), color=COLOURS["alarm"], linestyle="--", linewidth=1,
                   label="excursion start")


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")


def scatter(pair: PairData) -> str | None:
    """Proxy vs audit in the reference period and in the recent window, with the line and its band."""
    if pair.line is None or not pair.reference:
        return None
    proxy, audit, _ = pair.key
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    xs = [v[1] for v in pair.reference + pair.recent]
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.05 or 0.5
    grid = [lo - pad + i * (hi - lo + 2 * pad) / 100 for i in range(101)]
    for ax, values, title in ((axes[0], pair.reference, "reference period"), (axes[1], pair.recent, "recent window")):
        ax.scatter(_jittered([v[1] for v in values]), _jittered([v[2] for v in values]), s=8, alpha=0.35,
                   color=COLOURS["audit"], label=f"audited outputs ({len(values)})")
        pred = [pair.predicted(x) for x in grid]
        se = [Z95 * pair.line.prediction_se(pair.direction * x) for x in grid]
        ax.plot(grid, pred, color=COLOURS["promise"], label="reference line")
        ax.fill_between(grid, [p - e for p, e in zip(pred, se, strict=True)],
                        [p + e for p, e in zip(pred, se, strict=True)], color=COLOURS["promise"], alpha=0.25,
                        label="95% band of the line")
        ax.plot(grid, [p - pair.line.scale for p in pred], color=COLOURS["promise"], linestyle=":", linewidth=1,
                label="± residual s.d.")
        ax.plot(grid, [p + pair.line.scale for p in pred], color=COLOURS["promise"], linestyle=":", linewidth=1)
        if values:
            ax.scatter([_wmean(values, 1)], [_wmean(values, 2)], s=80, marker="X", color=COLOURS["alarm"],
                       label="mean", zorder=3)
        ax.set_title(title)
        ax.set_xlabel(proxy)
        _legend(ax)
    axes[0].set_ylabel(audit)
    return _uri(fig)


def _jittered(xs: list[float]) -> list[float]:
    """Discrete values (0/1 audits, counts) spread a little, seeded, so that overlapping points show."""
    distinct = sorted(set(xs))
    if len(distinct) > 12 or len(distinct) < 2:
        return xs
    width = 0.08 * min(b - a for a, b in itertools.pairwise(distinct))
    rng = random.Random(0)
    return [x + rng.uniform(-width, width) for x in xs]


def _wmean(values: Values, column: int) -> float:
    return sum(v[column] * v[3] for v in values) / sum(v[3] for v in values)


def _bins(values: Values) -> list[Values]:
    size = max(1, math.ceil(len(values) / BINS))
    return [values[i:i + size] for i in range(0, len(values), size)]


def over_time(pair: PairData) -> str | None:
    """Audit and the proxy's promise over time (binned means), and the gap with its interval."""
    if pair.line is None or not pair.series:
        return None
    proxy, audit, _ = pair.key
    end = max(pair.series[-1][0], pair.history[-1].ts if pair.history else 0.0)
    fig = Figure(figsize=(10, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    bins = _bins(pair.series)
    times = [_time(_wmean(b, 0)) for b in bins]
    top.plot(times, [_wmean(b, 2) for b in bins], color=COLOURS["audit"], marker=".", label=f"{audit} (mean)")
    promise = [sum(pair.predicted(v[1]) * v[3] for v in b) / sum(v[3] for v in b) for b in bins]
    top.plot(times, promise, color=COLOURS["promise"], marker=".", label=f"what {proxy} promises")
    top.set_ylabel(audit)
    top.set_title(f"{audit} and the promise of {proxy} over time")
    _mark(top, pair, end)
    _legend(top)
    rows = [r for r in pair.history if r.body.get("gap") is not None]
    if rows:
        t = [_time(r.ts) for r in rows]
        bottom.plot(t, [r.body["gap"] for r in rows], color=COLOURS["gap"], label="gap (recent window)")
        lower = [r.body.get("gap_lower") for r in rows]
        upper = [r.body.get("gap_upper") for r in rows]
        if all(v is not None for v in lower + upper):
            bottom.fill_between(t, lower, upper, color=COLOURS["gap"], alpha=0.2, label="95% interval")
    else:
        gaps = [p - _wmean(b, 2) for p, b in zip(promise, bins, strict=True)]
        bottom.plot(times, gaps, color=COLOURS["gap"], marker=".", label="gap (binned)")
    bottom.axhline(0.0, color=COLOURS["reference"], linewidth=0.8)
    bottom.set_ylabel("promise − audit")
    _mark(bottom, pair, end)
    _legend(bottom)
    fig.autofmt_xdate()
    return _uri(fig)


def statistic(pair: PairData) -> str | None:
    """The CUSUM statistic against its alarm and warn thresholds, as recorded at detect steps."""
    rows = [r for r in pair.history if r.body.get("statistic") is not None and r.body.get("threshold") is not None]
    if not rows:
        return None
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    t = [_time(r.ts) for r in rows]
    ax.plot(t, [float(r.body["statistic"]) for r in rows], color=COLOURS["gap"], label="CUSUM statistic")
    ax.plot(t, [float(r.body["threshold"]) for r in rows], color=COLOURS["alarm"], linestyle="--",
            label="alarm threshold")
    if all(r.body.get("warn_threshold") is not None for r in rows):
        ax.plot(t, [float(r.body["warn_threshold"]) for r in rows], color=COLOURS["warn"], linestyle=":",
                label="warn threshold")
    _mark(ax, pair, rows[-1].ts)
    ax.set_title("detection statistic")
    _legend(ax)
    fig.autofmt_xdate()
    return _uri(fig)


def states(pair: PairData) -> str | None:
    """The state over time, from the pair's state changes."""
    events = sorted(pair.events, key=lambda e: e["ts"])
    if not events:
        return None
    end = max([events[-1]["ts"], *(r.ts for r in pair.history[-1:]), *(v[0] for v in pair.series[-1:])])
    t = [_time(e["ts"]) for e in events] + [_time(end)]
    codes = [STATE_CODE.get(e["state"], 0) for e in events]
    fig = Figure(figsize=(10, 1.8))
    ax = fig.subplots()
    ax.step(t, [*codes, codes[-1]], where="post", color=COLOURS["alarm"])
    ax.set_yticks([0, 1, 2], ["ok", "warn", "alarm"])
    ax.set_ylim(-0.3, 2.3)
    ax.set_title("state")
    fig.autofmt_xdate()
    return _uri(fig)
