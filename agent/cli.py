"""The ``goodhart-agent`` command line. Exit codes: 0 success, 1 runtime failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__
from agent.compute import load_and_build
from agent.config import DEFAULT_LISTEN, Config, ConfigError, parse_listen

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXAMPLES = {
    "run": "goodhart-agent run --config /etc/goodhart-agent/config.yaml --listen 0.0.0.0:10100",
    "check-config": "goodhart-agent check-config config.yaml",
    "replay": "goodhart-agent replay --config config.yaml outputs.jsonl --events-out events.jsonl",
    "demo": "goodhart-agent demo --speedup 10",
    "rebaseline": "goodhart-agent rebaseline --config config.yaml --proxy thumbs_up",
    "reference": "goodhart-agent reference export --config config.yaml --out reference.json",
    "reference import": "goodhart-agent reference import --config config.yaml reference.json",
}


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goodhart-agent",
        description="Alarms when an AI system's proxy metrics stop tracking its audited quality.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.")
    parser.add_argument("--version", action="version", version=f"goodhart-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=f"example: {EXAMPLES[name]}", formatter_class=argparse.RawDescriptionHelpFormatter)

    run = command("run", "Run the daemon: follow the source, detect, serve /metrics.")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--listen", type=_listen, help=f"HOST:PORT for /metrics and probes (default {DEFAULT_LISTEN})")
    run.add_argument("--on-error", choices=("exit", "serve"), default="exit",
                     help="exit (default): a config that cannot run exits 2, for standalone and gateway runs. "
                          "serve: never-down mode for sidecars: stay up, serve /metrics (goodhart_config_valid 0), "
                          "/healthz and /readyz, log the problem, retry the config every --retry-seconds")
    run.add_argument("--retry-seconds", type=_positive, default=30.0,
                     help="with --on-error serve: seconds between two attempts to load the config (default 30)")

    check = command("check-config", "Validate a config file; one line per problem with its key path.")
    check.add_argument("file", help="YAML config file")
    check.add_argument("--audits-per-second", type=float, default=None,
                       help="audited pairs per second the deployment gets, to state the budget as time")
    check.add_argument("--strict", action="store_true",
                       help="treat warnings (an unset API key variable) as errors: exit 2, as run and replay would")

    rep = command("replay", "Run the pipeline over a recorded JSONL stream on its own clock; write events.")
    rep.add_argument("--config", required=True, help="YAML config file")
    rep.add_argument("input", help="recorded records, one JSON object per line")
    rep.add_argument("--events-out", required=True, help="where to write one JSON line per alarm state change")
    rep.add_argument("--metrics-out", help="also write the final /metrics exposition (Prometheus text) here")
    rep.add_argument("--state-dir", help="keep the store here (a new or empty directory) instead of a temporary "
                     "one, e.g. for reference export")

    demo = command("demo", "A simulated support bot that games its proxies, watched by the real daemon.")
    demo.add_argument("--listen", type=_listen, default="127.0.0.1:10100", help="HOST:PORT (default 127.0.0.1:10100)")
    demo.add_argument("--speedup", type=float, default=1.0, help="run demo time this many times faster (default 1)")
    demo.add_argument("--change-after", type=float, default=120.0,
                      help="demo seconds before the bot starts gaming its proxies (default 120)")
    demo.add_argument("--duration", type=float, default=0.0,
                      help="stop after this many demo seconds (default 0: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=10.0, help="conversations per demo second (default 10)")
    demo.add_argument("--state-dir", help="keep records and state here instead of a temporary directory")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")

    reb = command("rebaseline", "Forget the reference after an intended change (running daemon, or its store).")
    reb.add_argument("--config", required=True, help="YAML config file")
    reb.add_argument("--proxy", help="only pairs with this proxy")
    reb.add_argument("--audit", help="only pairs with this audit")
    reb.add_argument("--segment", help="only this segment ('*' for the whole stream)")
    reb.add_argument("--url", help="the daemon's listener (default: from the config's listen)")

    _reference_parser(command("reference", "The fitted references as a reviewed JSON artifact: export them from a "
                              "store (running daemon or not), or import one into a stopped agent's store."))
    return parser


def _reference_parser(ref: argparse.ArgumentParser) -> None:
    """``reference export`` and ``reference import``, each with its own example."""
    actions = ref.add_subparsers(dest="action", required=True, metavar="ACTION")
    exp = actions.add_parser("export", help="write every fitted reference in the config's state_dir (read-only)",
                             epilog=f"example: {EXAMPLES['reference']}")
    exp.add_argument("--config", required=True, help="YAML config file")
    exp.add_argument("--out", help="where to write the artifact (default: standard output)")
    imp = actions.add_parser("import", help="start the artifact's pairs from it in a stopped agent's store",
                             epilog=f"example: {EXAMPLES['reference import']}")
    imp.add_argument("--config", required=True, help="YAML config file")
    imp.add_argument("file", help="a reference artifact written by reference export")


def _load(path: str) -> Config:
    """The validated config, its computed proxies built once to prove they can be (a bad regex or
    model exits 2 here, with its key path, before anything starts)."""
    config, _ = load_and_build(path)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config.forward is not None:
        return _check_forwarder(config, args.strict)
    from agent.audit import key_problems
    from agent.detect.factory import per_test_arl

    problems = key_problems(config)
    pinned = _check_reference_file(config)
    if args.strict and problems:  # where the daemon will run: what run and replay would refuse, refuse here
        raise ConfigError(problems)

    gamma = config.detection.audits_between_false_alarms
    print(f"ok: {len(config.proxies)} proxies x {len(config.audits)} audits = {config.pair_count} pairs, "
          f"segments {'by ' + config.segments.field if config.segments else 'off'}")
    print(f"false alarms: at most 1 per {gamma:,.0f} audits for the whole deployment "
          f"(each test: 1 per {per_test_arl(config):,.0f} of its audited pairs)")
    rates = [args.audits_per_second] if args.audits_per_second else [0.1, 1.0, 10.0]
    print("  that is about one every " + ", ".join(
        f"{_duration(gamma / rate)} at {rate:g} audits/s" for rate in rates if rate > 0))
    if pinned is not None:
        print(f"reference file: {pinned} pairs start from {config.detection.reference_file}")
    for problem in problems:  # where check-config runs is often not where the daemon runs
        print(f"warning: {problem} (run and replay refuse to start without it)", file=sys.stderr)
    return EXIT_OK


def _check_reference_file(config: Config) -> int | None:
    """Pairs pinned by ``detection.reference_file`` (None when unset); ConfigError as at start."""
    path = config.detection.reference_file
    if not path:
        return None
    from agent.artifact import ArtifactError, load_artifact

    try:
        return len(load_artifact(path, config).pairs)
    except ArtifactError as err:
        raise ConfigError([f"detection.reference_file: {path} {err}"]) from None


def _check_forwarder(config: Config, strict: bool) -> int:
    """A forwarder validates and computes records, then ships them: say so, and what it will need at start."""
    from agent.forward import identity_from_env, setting_problems

    assert config.forward is not None
    problems = setting_problems(config.forward)
    if strict and problems:
        raise ConfigError(problems)
    f = config.forward
    computed = sum(1 for p in config.proxies if p.compute is not None)
    print(f"ok: forwarder to {f.url}: {len(config.proxies)} proxies ({computed} computed here) and "
          f"{len(config.audits)} audits checked per record; detection, judges and graders run on the gateway")
    labels = identity_from_env(f.labels_from_env)
    print(f"  buffer: at most {f.max_buffer_bytes:,} bytes and {_duration(f.max_buffer_age_seconds)}; "
          f"batches of {f.batch_records} records ({f.compression}); identity labels here: "
          + (", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none set"))
    for problem in problems:
        print(f"warning: {problem} (run refuses to start without it)", file=sys.stderr)
    return EXIT_OK


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} seconds"


def cmd_run(args: argparse.Namespace) -> int:
    if args.on_error == "serve":
        from agent.guard import Guard

        Guard(args.config, args.listen, args.retry_seconds).run_until_signal()
        return EXIT_OK
    config = _load(args.config)
    from agent.daemon import Agent
    from agent.logs import setup_logging

    setup_logging(config.log.level, config.log.format)
    Agent(config, args.listen).run_until_signal()
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args.config)  # a forward: section is ignored: replay runs the pipeline itself
    from agent.replay import replay

    try:
        with open(args.events_out, "w", encoding="utf-8") as events:
            summary = replay(config, args.input, events, progress=sys.stderr, metrics_out=args.metrics_out,
                             state_dir=args.state_dir)
    except FileNotFoundError as err:
        print(f"goodhart-agent: {err.filename}: no such file", file=sys.stderr)
        return EXIT_USAGE
    print(summary.line(), file=sys.stderr)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    if args.speedup <= 0 or args.rate <= 0:
        print("goodhart-agent: --speedup and --rate must be positive", file=sys.stderr)
        return EXIT_USAGE
    return run_demo(args.listen, speedup=args.speedup, change_after=args.change_after, duration=args.duration,
                    rate=args.rate, state_dir=args.state_dir, seed=args.seed)


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


COMMANDS = {"run": cmd_run, "check-config": cmd_check_config, "replay": cmd_replay, "demo": cmd_demo,
            "rebaseline": cmd_rebaseline, "reference": cmd_reference}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as err:  # one clear line, not a traceback, for runtime failures
        print(f"goodhart-agent: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE


__all__ = ["main"]
