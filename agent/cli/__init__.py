"""The ``goodhart-agent`` command line. Exit codes: 0 success, 1 runtime failure, 2 bad usage or config.

``parser`` (every command, its help and an example), ``running`` (check-config, run, replay, demo),
``stores`` (rebaseline, reference, evidence, report), ``planning`` (plan), ``common`` (what they share).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agent.cli.parser import EXAMPLES, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, build_parser
from agent.cli.planning import cmd_plan
from agent.cli.running import cmd_check_config, cmd_demo, cmd_replay, cmd_run
from agent.cli.stores import cmd_evidence, cmd_rebaseline, cmd_reference, cmd_report
from agent.config import ConfigError

COMMANDS = {"run": cmd_run, "check-config": cmd_check_config, "replay": cmd_replay, "demo": cmd_demo,
            "rebaseline": cmd_rebaseline, "reference": cmd_reference, "evidence": cmd_evidence, "report": cmd_report,
            "plan": cmd_plan}



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


__all__ = ["COMMANDS", "EXAMPLES", "build_parser", "main"]
