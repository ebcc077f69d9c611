"""The look the report and the status page share: one style sheet, one state badge.

Its own module so the status page (served by every daemon) never imports the report's figures,
which need matplotlib, an optional extra.
"""

from __future__ import annotations

import html

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:0.9em;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}.alarm{background:#d62728;color:#fff}.warn{background:#f0ad4e}.ok{background:#5cb85c;color:#fff}
.badge{padding:1px 8px;border-radius:8px;font-weight:600}.why{font-size:1.05em;line-height:1.5}
img{max-width:100%;display:block;margin:8px 0}.muted{color:#777}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def badge(state: str) -> str:
    return f'<span class="badge {html.escape(state)}">{html.escape(state)}</span>'
