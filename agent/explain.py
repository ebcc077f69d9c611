"""State changes in words: the sentence an on-call engineer reads in the log, the demo and the docs.

Two times are named apart everywhere: a divergence *started* at the oldest audited output of the
current excursion (the detector's change-point estimate, the event's ``since``), and was *raised*
when the pair entered its state (the event's ``ts``). When several proxies alarm against one audit,
they are ranked by their own shift: a proxy whose own rise explains most of the gap
(``proxy_inflated``) comes before one that only saw the audit drop, and among equals the one that
moved furthest from its reference mean comes first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from agent.core import PairKey

#: Each reason a verdict gives, in words (docs/detection.md explains them at length).
REASONS: dict[str, str] = {
    "warming up": "the reference is still being fitted from the first audited outputs",
    "proxy_inflated": "the proxy rose beyond what the audit confirms: its own rise explains most of the gap",
    "audit_dropped": "the audit fell below what the reference predicts while the proxy held",
    "relation_lost": "the audit no longer moves with the proxy",
    "gains_bending": "the audit's gain per unit of proxy fell well below the reference's while the proxy rose",
}


def _clock(ts: Any) -> str | None:
    if not isinstance(ts, int | float) or not math.isfinite(ts) or ts <= 0:
        return None
    return time.strftime("%H:%M:%S", time.localtime(ts))


def sentence(event: Mapping[str, Any]) -> str:
    """One line for a state change event (the CONTRACT's replay event, with its extra keys).

    >>> sentence({"ts": 0, "proxy": "thumbs_up", "audit": "resolved", "segment": "*", "previous": "ok",
    ...           "state": "alarm", "reason": "audit_dropped", "excursion_gap": 0.31})
    'thumbs_up vs resolved [*]: ok -> ALARM (audit_dropped, audit 0.31 below what the proxy predicts)'
    """
    state = event["state"].upper() if event["state"] == "alarm" else event["state"]
    text = f"{event['proxy']} vs {event['audit']} [{event['segment']}]: {event['previous']} -> {state}"
    details = []
    if event.get("reason"):
        details.append(str(event["reason"]))
        gap = event.get("excursion_gap", event.get("gap"))
        if isinstance(gap, int | float) and math.isfinite(gap) and event["reason"] != "warming up":
            details.append(f"audit {gap:.2f} below what the proxy predicts")
    started, raised = _clock(event.get("since")), _clock(event.get("ts"))
    if event["state"] != "ok" and started is not None and started != raised:
        details.append(f"started {started}, raised {raised}")
    if event.get("rank") and event.get("ranked_of", 1) > 1:
        details.append(f"proxy {event['rank']} of {event['ranked_of']} in alarm against {event['audit']}, "
                       "by its own shift")
    return text + (f" ({', '.join(details)})" if details else "")


def rank_by_shift(alarms: Iterable[tuple[PairKey, str, float | None]]) -> dict[PairKey, tuple[int, int]]:
    """(rank, of) for every pair in alarm whose audit and segment have more than one proxy in alarm.

    ``alarms``: the pairs in alarm with their reason and proxy shift (recent mean proxy, in
    reference s.d. from the reference mean); unknown shifts rank last among equals.

    >>> rank_by_shift([(("a", "q", "*"), "audit_dropped", 3.0), (("b", "q", "*"), "proxy_inflated", 0.4),
    ...                (("c", "r", "*"), "audit_dropped", 1.0)])
    {('b', 'q', '*'): (1, 2), ('a', 'q', '*'): (2, 2)}
    """
    groups: dict[tuple[str, str], list[tuple[PairKey, bool, float]]] = {}
    for key, reason, shift in alarms:
        value = shift if isinstance(shift, int | float) and math.isfinite(shift) else -math.inf
        groups.setdefault((key[1], key[2]), []).append((key, reason == "proxy_inflated", value))
    ranks: dict[PairKey, tuple[int, int]] = {}
    for members in groups.values():
        if len(members) > 1:
            ordered = sorted(members, key=lambda m: (not m[1], -m[2], m[0]))
            ranks.update({key: (i + 1, len(ordered)) for i, (key, _, _) in enumerate(ordered)})
    return ranks
