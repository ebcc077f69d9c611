"""Commands on a state dir: ``rebaseline``, ``reference export|import``, ``evidence``, ``report``."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import _load, _open_state
from agent.cli.parser import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.config import Config, ConfigError, parse_listen


def cmd_rebaseline(args: argparse.Namespace) -> int:
    import requests

    config = _load(args.config)
    selector = {k: v for k, v in (("proxy", args.proxy), ("audit", args.audit), ("segment", args.segment)) if v}
    host, port = parse_listen(config.listen)
    url = args.url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
    try:
        resp = requests.post(url.rstrip("/") + "/v1/rebaseline", json=selector, timeout=10)
    except requests.ConnectionError:
        return _rebaseline_offline(config, selector, url)
    if resp.status_code == 404:  # the daemon has no such proxy, audit or segment
        print(f"goodhart-agent: rebaseline: {resp.json().get('error', resp.text.strip())}", file=sys.stderr)
        return EXIT_USAGE
    if resp.status_code != 200:
        print(f"goodhart-agent: rebaseline refused ({resp.status_code}): {resp.text.strip()}", file=sys.stderr)
        return EXIT_FAILURE
    events = resp.json().get("events", [])
    print(f"rebaselined through {url}: {len(events)} pairs now warming up")
    return EXIT_OK


def _rebaseline_offline(config: Config, selector: dict[str, str], url: str) -> int:
    """No daemon answers: apply the rebaseline to its store, which it reads at its next start."""
    from pathlib import Path

    from agent.bank import UnknownPair
    from agent.clock import WallClock
    from agent.pipeline import Pipeline
    from agent.statelock import StateDirBusy, StateLock
    from agent.store import DB_FILENAME, Store

    if not (Path(config.state_dir) / DB_FILENAME).exists():
        print(f"goodhart-agent: no daemon answers and no store at {config.state_dir}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        lock = StateLock(config.state_dir).acquire()
    except StateDirBusy:
        print(f"goodhart-agent: a daemon holds {config.state_dir} but does not answer at {url}; "
              "pass --url with its listener", file=sys.stderr)
        return EXIT_FAILURE
    store = Store(config.state_dir)
    try:
        events = Pipeline(config, store, WallClock()).rebaseline(**selector)  # type: ignore[arg-type]
    except UnknownPair as err:
        print(f"goodhart-agent: rebaseline: {err}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()
        lock.release()
    print(f"rebaselined in the store at {config.state_dir}: {len(events)} pairs now warming up")
    return EXIT_OK


def cmd_reference(args: argparse.Namespace) -> int:
    config = _load(args.config)
    return _reference_export(config, args.out) if args.action == "export" else _reference_import(config, args.file)


def _reference_export(config: Config, out: str | None) -> int:
    """Read-only, without the state-dir lock: a running daemon holds it, and a WAL reader needs none
    (it sees the daemon's last checkpoint, and the daemon checkpoints at every new fit)."""
    import json
    import time

    from agent.artifact import ArtifactError, export_references, write_artifact
    from agent.store import Store

    try:
        store = Store(config.state_dir, read_only=True)
    except FileNotFoundError:
        print(f"goodhart-agent: no store at {config.state_dir}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        doc = export_references(config, store, time.time())
    except ArtifactError as err:
        raise ConfigError([str(err)]) from None
    finally:
        store.close()
    if out:
        write_artifact(doc, out)
    else:
        print(json.dumps(doc, indent=1, sort_keys=True))
    print(f"exported {len(doc['pairs'])} references ({len(doc['warming_up'])} pairs still warming up)"
          + (f" to {out}" if out else ""), file=sys.stderr)
    return EXIT_OK


def _reference_import(config: Config, path: str) -> int:
    """Into a stopped agent's store (created if absent, e.g. an init container filling an emptyDir)."""
    from pathlib import Path

    from agent.clock import WallClock
    from agent.pipeline import Pipeline
    from agent.statelock import StateDirBusy, StateLock
    from agent.store import Store

    try:
        Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        lock = StateLock(config.state_dir).acquire()
    except StateDirBusy:
        print(f"goodhart-agent: a daemon holds {config.state_dir}: stop it first, or set "
              "detection.reference_file and restart it", file=sys.stderr)
        return EXIT_FAILURE
    try:
        store = Store(config.state_dir)
        try:
            keys = Pipeline(config, store, WallClock()).import_references(path, force=True)
        finally:
            store.close()
    finally:
        lock.release()
    print(f"imported {len(keys)} references from {path} into the store at {config.state_dir}")
    return EXIT_OK


def cmd_evidence(args: argparse.Namespace) -> int:
    import json

    from agent.evidence import directions_of, evidence, read_snapshot

    config = _load(args.config)
    store = _open_state(args.state_dir or config.state_dir)
    if store is None:
        return EXIT_FAILURE
    try:
        key = (args.proxy, args.audit, args.segment)
        doc = evidence(store, read_snapshot(config, store), key, directions_of(config), config.evidence, args.limit)
    finally:
        store.close()
    if doc is None:
        print(f"goodhart-agent: no pair {args.proxy} vs {args.audit} in segment {args.segment!r}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(doc, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from agent.report import INSTALL_HINT, report_available

    if not report_available():
        print(f"goodhart-agent: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_USAGE
    config = _load(args.config)
    if args.input is None:
        return _write_report(config, args.state_dir or config.state_dir, args.out,
                             f"the store in {args.state_dir or config.state_dir}")
    from agent.replay import replay

    with tempfile.TemporaryDirectory(prefix="goodhart-report-") as tmp:
        try:
            with open(Path(tmp) / "events.jsonl", "w", encoding="utf-8") as events:
                summary = replay(config, args.input, events, progress=sys.stderr, state_dir=Path(tmp) / "state")
        except FileNotFoundError as err:
            print(f"goodhart-agent: {err.filename}: no such file", file=sys.stderr)
            return EXIT_USAGE
        print(summary.line(), file=sys.stderr)
        return _write_report(config, str(Path(tmp) / "state"), args.out, f"a replay of {args.input}")


def _write_report(config: Config, state_dir: str, out: str, origin: str) -> int:
    from pathlib import Path

    from agent.evidence import read_snapshot
    from agent.report import build_report

    store = _open_state(state_dir)
    if store is None:
        return EXIT_FAILURE
    try:
        snapshot = read_snapshot(config, store)
        page = build_report(config, store, snapshot, origin, now=None)
    finally:
        store.close()
    Path(out).write_text(page, encoding="utf-8")
    alarms = sum(1 for state in snapshot.states.values() if state == "alarm")
    print(f"wrote {out}: {len(snapshot.states)} pairs, {alarms} in alarm", file=sys.stderr)
    return EXIT_OK
