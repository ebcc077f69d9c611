"""The report as one self-contained HTML file: styles inline, figures as data URIs, no scripts."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from agent import __version__
from agent.report import figures
from agent.report.data import PairData
from agent.report.style import STYLE, badge
from agent.report.words import explanation, reason_words, when

FIGURES: tuple[tuple[str, Callable[[PairData], str | None]], ...] = (
    ("proxy vs audit: reference period and recent window", figures.scatter),
    ("audit, the proxy's promise and the gap over time", figures.over_time),
    ("detection statistic against its threshold", figures.statistic),
    ("state history", figures.states),
)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else html.escape(str(value if value is not None else "-"))


def _summary(pairs: list[PairData]) -> str:
    rows = []
    for pair in pairs:
        est = pair.verdict.estimates if pair.verdict is not None else None
        gap = "-" if est is None or est.gap is None or est.gap != est.gap else (
            f"{est.gap:.3g} [{_num(est.gap_lower)}, {_num(est.gap_upper)}]")
        rows.append(f'<tr><td><a href="#{_anchor(pair)}">{html.escape(pair.name)}</a></td><td>{badge(pair.state)}'
                    f"</td><td>{html.escape(reason_words(pair.verdict.reason if pair.verdict else ''))}</td>"
                    f"<td>{when(pair.state_since)}</td><td>{when(pair.excursion_since)}</td><td>{gap}</td></tr>")
    return ("<table><tr><th>pair</th><th>state</th><th>why</th><th>state since</th><th>excursion since</th>"
            "<th>gap [95%]</th></tr>" + "".join(rows) + "</table>")


def _anchor(pair: PairData) -> str:
    return "pair-" + "-".join(html.escape(part) for part in pair.key).replace("*", "all")


def _events(pair: PairData) -> str:
    rows = [f"<tr><td>{when(e['ts'])}</td><td>{badge(e.get('previous', ''))} → {badge(e['state'])}</td>"
            f"<td>{html.escape(reason_words(e.get('reason', '')))}</td><td class=num>{_num(e.get('statistic'))}</td>"
            f"<td class=num>{_num(e.get('threshold'))}</td></tr>" for e in pair.events[-50:]]
    if not rows:
        return '<p class="muted">no state changes recorded</p>'
    return ("<table><tr><th>time</th><th>change</th><th>why</th><th>statistic</th><th>threshold</th></tr>"
            + "".join(rows) + "</table>")


def _evidence(pair: PairData) -> str:
    doc = pair.evidence or {}
    items = doc.get("items", [])
    if not items:
        return f'<p class="muted">{html.escape(doc.get("note", "no evidence"))}</p>'
    text = any("input" in i or "output" in i for i in items)
    head = ("<tr><th>id</th><th>time</th><th>segment</th><th>proxy</th><th>audit</th><th>predicted</th>"
            "<th>residual</th>" + ("<th>input</th><th>output</th>" if text else "") + "</tr>")
    rows = []
    for i in items:
        extra = f"<td>{html.escape(i.get('input', ''))}</td><td>{html.escape(i.get('output', ''))}</td>" if text else ""
        rows.append(f"<tr><td>{html.escape(i['id'])}</td><td>{when(i['ts'])}</td><td>{_num(i['segment'])}</td>"
                    f"<td class=num>{_num(i['proxy'])}</td><td class=num>{_num(i['audit'])}</td>"
                    f"<td class=num>{_num(i['predicted'])}</td><td class=num>{_num(i['residual'])}</td>{extra}</tr>")
    return (f"<p>The {len(items)} audited outputs of the current excursion that fell shortest of the proxy's "
            "promise (residual = audit − predicted):</p><table>" + head + "".join(rows) + "</table>")


def _section(pair: PairData) -> str:
    parts = [f'<h2 id="{_anchor(pair)}">{html.escape(pair.name)} {badge(pair.state)}</h2>', '<div class="why">']
    parts += [f"<p>{html.escape(s)}</p>" for s in explanation(pair)]
    parts.append("</div>")
    for title, draw in FIGURES:
        uri = draw(pair)
        if uri is not None:
            parts.append(f'<h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" src="{uri}">')
    parts += ["<h3>state history</h3>", _events(pair), "<h3>evidence</h3>", _evidence(pair)]
    return "\n".join(parts)


def render(pairs: list[PairData], origin: str, generated: float) -> str:
    """The whole report; ``origin`` says what it was made from (a replayed file, a state dir)."""
    alarms = [p for p in pairs if p.state == "alarm"]
    verdict = (f"{len(alarms)} pair(s) in alarm: " + ", ".join(p.name for p in alarms)) if alarms \
        else "no pair in alarm"
    body = [f"<h1>goodhart-agent report</h1><p>{html.escape(verdict)}.</p>",
            f'<p class="muted">From {html.escape(origin)}; generated {when(generated)} by goodhart-agent '
            f"{__version__}. Shows every pair not ok and every whole-stream pair.</p>",
            _summary(pairs)] + [_section(p) for p in pairs]
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>goodhart-agent report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")
