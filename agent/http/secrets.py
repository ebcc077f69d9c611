"""Secrets (bearer tokens, API keys, header values), read from the environment or a file.

A secret never sits in the config itself: the config names an environment variable or a file (a
mounted Kubernetes Secret), and a missing one is a config problem reported with its key path, so
the daemon refuses to start instead of running unauthenticated by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agent.config import ConfigError


def from_env(var: str, key: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of ``var``; a :class:`ConfigError` naming ``key`` when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(var, "").strip()
    if not value:
        raise ConfigError([f"{key}: environment variable {var} is not set"])
    return value


def from_file(path: str, key: str) -> str:
    """The file's content without surrounding whitespace (Secrets often end in a newline)."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError([f"{key}: cannot read {path}: {reason}"]) from None
    if not value:
        raise ConfigError([f"{key}: {path} is empty"])
    return value


def env_or_file(prefix: str, env_key: str, var: str | None, file_key: str, path: str | None,
                environ: Mapping[str, str] | None = None) -> str | None:
    """The secret in variable ``var`` (config key ``prefix.env_key``) or in file ``path`` (``prefix.file_key``).

    The variable wins when both are named (config validation allows only one); None when neither is.
    """
    if var:
        return from_env(var, f"{prefix}.{env_key}", environ)
    if path:
        return from_file(path, f"{prefix}.{file_key}")
    return None


def bearer_token(token_env: str | None, token_file: str | None, prefix: str = "source",
                 environ: Mapping[str, str] | None = None) -> str | None:
    """The token named by ``token_env`` or ``token_file`` (at most one is set), or None."""
    return env_or_file(prefix, "token_env", token_env, "token_file", token_file, environ)
