"""The argument parser: every command with its help text and an example (a test checks they are documented)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from agent import __version__
from agent.config import DEFAULT_LISTEN, parse_listen

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXAMPLES = {
    "run": "goodhart-agent run --config /etc/goodhart-agent/config.yaml --listen 0.0.0.0:10100",
    "check-config": "goodhart-agent check-config config.yaml --sample /var/log/ai/outputs.jsonl",
    "replay": "goodhart-agent replay --config config.yaml outputs.jsonl --events-out events.jsonl",
    "demo": "goodhart-agent demo --speedup 10",
    "rebaseline": "goodhart-agent rebaseline --config config.yaml --proxy thumbs_up",
    "reference": "goodhart-agent reference export --config config.yaml --out reference.json",
    "reference import": "goodhart-agent reference import --config config.yaml reference.json",
    "evidence": "goodhart-agent evidence --config config.yaml --proxy thumbs_up --audit resolved --segment '*'",
    "report": "goodhart-agent report --config config.yaml outputs.jsonl --out report.html",
    "plan": "goodhart-agent plan --config config.yaml --audits-per-second 0.001 --shift 1 --target-hours 24",
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

    _running_commands(command)

    rep = command("replay", "Run the pipeline over a recorded JSONL stream on its own clock; write events.")
    rep.add_argument("--config", required=True, help="YAML config file")
    rep.add_argument("input", help="recorded records, one JSON object per line")
    rep.add_argument("--events-out", required=True, help="where to write one JSON line per alarm state change")
    rep.add_argument("--metrics-out", help="also write the final /metrics exposition (Prometheus text) here")
    rep.add_argument("--state-dir", help="keep the store here (a new or empty directory) instead of a temporary "
                     "one, for reference export, evidence and report")

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
    _why_commands(command)
    _plan_parser(command("plan", "How long warm-up and detection take at an audit rate; the rate a target needs."))
    return parser


def _running_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``run`` and ``check-config``."""
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
    check.add_argument("--sample", metavar="FILE",
                       help="a real JSONL log: report how often each configured field is present (and numeric)")
    check.add_argument("--records", type=int, default=1000, metavar="N",
                       help="records of --sample read (default 1000)")


def _share(value: str) -> float:
    number = _positive(value)
    if number > 1:
        raise argparse.ArgumentTypeError("must be at most 1")
    return number


def _plan_parser(plan: argparse.ArgumentParser) -> None:
    """``plan``: warm-up and detection delay at an audit rate."""
    plan.add_argument("--config", required=True, help="YAML config file")
    plan.add_argument("--audits-per-second", type=_positive, required=True,
                      help="audited pairs per second of the whole stream (3 per hour: 0.00083)")
    plan.add_argument("--shift", type=_positive, action="append", metavar="D",
                      help="a step shift to plan for, in residual standard deviations; repeatable "
                           "(default 0.5, 1 and 2)")
    plan.add_argument("--segment-share", type=_share, default=0.1, metavar="S",
                      help="a segment's share of the traffic, for its warm-up and delay (default 0.1)")
    plan.add_argument("--target-hours", type=_positive, default=24.0, metavar="T",
                      help="the audit rate needed to meet this time is stated (default 24)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON, for programs")


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



def _why_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``evidence`` and ``report``: why a pair alarmed."""
    evi = command("evidence", "The audited outputs behind a pair's current excursion, most adverse first, as JSON.")
    evi.add_argument("--config", required=True, help="YAML config file (its state_dir is read, never written)")
    evi.add_argument("--proxy", required=True, help="the pair's proxy")
    evi.add_argument("--audit", required=True, help="the pair's audit")
    evi.add_argument("--segment", default="*", help="the pair's segment (default '*': the whole stream)")
    evi.add_argument("--limit", type=int, help="at most this many items (default and bound: evidence.max_items)")
    evi.add_argument("--state-dir", help="read this state dir instead of the config's (e.g. a replay's)")

    rpt = command("report", "A self-contained HTML report with figures: why each pair alarmed.")
    rpt.add_argument("--config", required=True, help="YAML config file")
    rpt.add_argument("input", nargs="?", help="replay this recorded stream (default: read the store in state_dir)")
    rpt.add_argument("--out", required=True, help="where to write the HTML file")
    rpt.add_argument("--state-dir", help="read this state dir instead of the config's (without INPUT)")


