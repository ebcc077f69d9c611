"""The agent's one HTTP toolkit: a routed server, and what every client of a remote service needs.

``server`` (routes, body limits, admission), ``routes`` (the endpoints every listener has),
``client`` (Retry-After, backoff, size-limited replies), ``media`` (content types) and ``secrets``
(tokens from the environment or a file). This package imports only :mod:`agent.core` and
:mod:`agent.config` from the agent, so sources and auditors can share it without cycles.
"""

from __future__ import annotations

from agent.http.server import Admit, Handler, HttpServer, Request, Response

__all__ = ["Admit", "Handler", "HttpServer", "Request", "Response"]
