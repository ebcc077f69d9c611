"""Why it alarmed, in pictures: the HTML report and the daemon's status page.

``data`` reads what the report shows from the store and the detectors' snapshot; ``words`` the
explanation in sentences; ``figures`` the plots (matplotlib, an optional extra: ``pip install
'goodhart-agent[report]'``); ``page`` the self-contained report; ``status`` the status page at ``/``
(no matplotlib needed). Everything here only reads.
"""

from __future__ import annotations

import time

from agent.bank import Snapshot
from agent.config import Config
from agent.store import Store

INSTALL_HINT = "the report needs matplotlib: pip install 'goodhart-agent[report]'"


def report_available() -> bool:
    """Whether matplotlib imports (the report's one optional dependency); cached by Python after once."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def build_report(config: Config, store: Store, snapshot: Snapshot, origin: str, now: float | None = None) -> str:
    """The report's HTML for the pairs in ``snapshot``, with the audited outputs and history in ``store``."""
    from agent.report.data import gather
    from agent.report.page import render

    return render(gather(config, store, snapshot), origin, time.time() if now is None else now)


__all__ = ["INSTALL_HINT", "build_report", "report_available"]
