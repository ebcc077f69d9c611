"""Commands that run the pipeline: ``check-config``, ``run``, ``replay``, ``demo``."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import _duration, _load
from agent.cli.parser import EXIT_OK, EXIT_USAGE
from agent.config import Config, ConfigError


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
    if args.audits_per_second:
        from agent.cli.planning import warmup_note

        note = warmup_note(config, args.audits_per_second)
        if note:
            print(note)
    if pinned is not None:
        print(f"reference file: {pinned} pairs start from {config.detection.reference_file}")
    for problem in problems:  # where check-config runs is often not where the daemon runs
        print(f"warning: {problem} (run and replay refuse to start without it)", file=sys.stderr)
    if args.sample:
        return _sample(config, args.sample, args.records)
    return EXIT_OK


def _sample(config: Config, path: str, records: int) -> int:
    """Informative: field presence in a real log. Exit 0 whatever it shows; 2 when the file cannot be read."""
    from agent.sample import sample_file

    if records < 1:
        print("goodhart-agent: --records must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        with open(path, "rb") as stream:
            report = sample_file(config, stream, records)
    except OSError as err:
        print(f"goodhart-agent: --sample {path}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for line in report.lines():
        print(line)
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
    except FileExistsError as err:
        print(f"goodhart-agent: --state-dir {err}", file=sys.stderr)
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
