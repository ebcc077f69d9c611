"""The status page at ``/``: every pair's state in words, what is warming up and why, the parts' health.

Plain server-rendered HTML with inline SVG sparklines (the statistic against its threshold, from
the recorded verdicts); no scripts. Reads the pipeline's read-only view only, never its lock.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from agent.core import PairKey
from agent.report.data import STATE_ORDER
from agent.report.style import STYLE, badge
from agent.report.words import reason_words, when
from agent.store import VerdictRow
from agent.view import PipelineView

SPARK_POINTS = 120
SPARK_W, SPARK_H = 160, 28


def sparkline(rows: list[VerdictRow]) -> str:
    """The statistic (line) against the alarm threshold (dashed), as a small inline SVG."""
    points = [(float(r.body["statistic"]), float(r.body["threshold"])) for r in rows
              if r.body.get("statistic") is not None and r.body.get("threshold") is not None]
    if len(points) < 2:
        return '<span class="muted">-</span>'
    top = max(max(s for s, _ in points), max(t for _, t in points)) * 1.05 or 1.0
    step = SPARK_W / (len(points) - 1)

    def y(value: float) -> float:
        return SPARK_H - 1 - (SPARK_H - 2) * max(value, 0.0) / top

    line = " ".join(f"{i * step:.1f},{y(s):.1f}" for i, (s, _) in enumerate(points))
    threshold = " ".join(f"{i * step:.1f},{y(t):.1f}" for i, (_, t) in enumerate(points))
    return (f'<svg width="{SPARK_W}" height="{SPARK_H}" viewBox="0 0 {SPARK_W} {SPARK_H}" role="img" '
            'aria-label="statistic against threshold">'
            f'<polyline points="{threshold}" fill="none" stroke="#d62728" stroke-dasharray="3,2" stroke-width="1"/>'
            f'<polyline points="{line}" fill="none" stroke="#7b3294" stroke-width="1.5"/></svg>')


def _gap(view: PipelineView, key: PairKey) -> str:
    verdict = view.snapshot.verdicts.get(key)
    est = verdict.estimates if verdict is not None else None
    if est is None or est.gap is None or not math.isfinite(est.gap):
        return "-"
    lo, hi = est.gap_lower, est.gap_upper
    interval = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None and math.isfinite(lo) else ""
    return f"{est.gap:.3g}{interval}"


def _evidence_link(key: PairKey) -> str:
    query = urlencode({"proxy": key[0], "audit": key[1], "segment": key[2]})
    return f'<a href="/v1/evidence?{html.escape(query)}">evidence</a>'


def _pairs(view: PipelineView) -> tuple[str, str]:
    """(the table of pairs with a reference, the list of pairs warming up and why)."""
    snap = view.snapshot
    counts = view.store_stats().pair_counts
    rows, warming = [], []
    for key in sorted(snap.states, key=lambda k: (STATE_ORDER.get(snap.states[k], 3), k)):
        verdict = snap.verdicts.get(key)
        name = html.escape(f"{key[0]} vs {key[1]} [{key[2]}]")
        if verdict is None or verdict.warming_up:
            est = verdict.estimates if verdict is not None else None
            have, want = (est.samples or 0, est.reference_pairs) if est is not None else (0, None)
            why = f"{have} of {want or '?'} audited outputs for its reference"
            if have == 0:
                pending = view.store_stats()
                why += (f" (none yet: {pending.pending_outputs} outputs wait for a label, "
                        f"{pending.pending_labels} labels for their output)")
            warming.append(f"<li>{name}: {html.escape(why)}</li>")
            continue
        since = verdict.estimates.since
        rows.append(
            f"<tr><td>{name}</td><td>{badge(snap.states[key])}</td><td>{html.escape(reason_words(verdict.reason))}"
            f"</td><td>{when(snap.since.get(key))}</td>"
            f"<td>{when(since if since is not None and math.isfinite(since) else None)}</td>"
            f"<td>{html.escape(_gap(view, key))}</td><td class=num>{counts.get(key, 0)}</td>"
            f"<td>{sparkline(view.verdict_history(key, SPARK_POINTS))}</td><td>{_evidence_link(key)}</td></tr>")
    table = ("<table><tr><th>pair</th><th>state</th><th>why</th><th>state since</th><th>excursion since</th>"
             "<th>gap [95%]</th><th>audited outputs</th><th>statistic / threshold</th><th></th></tr>"
             + "".join(rows) + "</table>") if rows else '<p class="muted">no pair has a reference yet</p>'
    return table, ("<ul>" + "".join(warming) + "</ul>") if warming else '<p class="muted">nothing</p>'


def _health(components: Mapping[str, Callable[[], bool]], view: PipelineView) -> str:
    rows = []
    for name, check in sorted(components.items()):
        try:
            up = bool(check())
        except Exception:  # a broken check is a down component, never a broken page
            up = False
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{badge('ok' if up else 'alarm')}</td></tr>"
                    .replace(">ok<", ">up<").replace(">alarm<", ">down<"))
    last = view.last_record_ts()
    rows += [f"<tr><td>last record from {html.escape(src)}</td><td>{when(ts)}</td></tr>"
             for src, ts in sorted(last.items())]
    return "<table>" + "".join(rows) + "</table>"


def render_status(view: PipelineView, components: Mapping[str, Callable[[], bool]], version: str,
                  report: bool) -> str:
    """The page; ``report`` says whether ``/report`` can render (matplotlib installed)."""
    table, warming = _pairs(view)
    alarms = sum(1 for s in view.snapshot.states.values() if s == "alarm")
    links = ['<a href="/report">report</a>' if report else
             "report: <span class=muted>pip install 'goodhart-agent[report]'</span>",
             '<a href="/v1/events">events</a>', '<a href="/metrics">metrics</a>', '<a href="/healthz">healthz</a>',
             '<a href="/readyz">readyz</a>']
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>goodhart-agent</title>"
            f"<style>{STYLE}</style></head><body><h1>goodhart-agent {html.escape(version)}</h1>"
            f"<p>{alarms} pair(s) in alarm; as of {when(view.snapshot.taken_at or None)}.</p>"
            f"<p>{' · '.join(links)}</p><h2>pairs</h2>{table}<h2>warming up</h2>{warming}"
            f"<h2>sources and components</h2>{_health(components, view)}</body></html>\n")
