"""Logs as one JSON object per line on stdout (or plain text for a terminal), never secrets.

Call sites pass structured data as ``extra={"fields": {...}}``; the formatter merges it in. Secrets
never reach a log call on purpose, but they travel inside what does: a pull URL's ``?api_key=``, an
exception that quotes the request, a provider's error echoing a key prefix. So every formatted line
is redacted last: URL query strings, ``key=value`` pairs whose key names a secret, bearer tokens and
``sk-``-style keys become ``<redacted>``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

#: (pattern, replacement), applied in order to each formatted line; none consumes a quote or a
#: backslash, so a JSON line stays valid JSON
REDACTIONS = (
    (re.compile(r"(https?://[^\s?\"'\\]+)\?[^\s\"'\\#]+"), r"\1?<redacted>"),
    (re.compile(r"\b((?:GET|POST|PUT|PATCH|DELETE|HEAD) /[^\s?\"'\\]*)\?[^\s\"'\\#]+"), r"\1?<redacted>"),
    (re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret|password|passwd|key)=[^\s&\"'\\,;]+"),
     r"\1=<redacted>"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 <redacted>"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_*.-]{6,}"), r"\1-<redacted>"),
)


def redact(text: str) -> str:
    """``text`` with query strings and key-looking values replaced.

    >>> redact('GET https://api.example/v1/s?page=2&api_key=abc123 failed: key sk-live-9f8e7d6c5b')
    'GET https://api.example/v1/s?<redacted> failed: key sk-<redacted>'
    >>> redact('http://127.0.0.1:80 "GET /v1/records?page=2 HTTP/1.1" 200 5')
    'http://127.0.0.1:80 "GET /v1/records?<redacted> HTTP/1.1" 200 5'
    >>> redact("Authorization: Bearer eyJhbGciOi.x token=s3cr3t")
    'Authorization: Bearer <redacted> token=<redacted>'
    """
    for pattern, replacement in REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        base = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return redact(base)


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # A coalesced, skipped run is the scheduler doing its job; only say so when debugging.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.ERROR)
