"""Docs that cannot drift: every command documented with an example, the generated config reference
current, the README's test command the one CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.cli import COMMANDS, EXAMPLES, build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_command_is_in_the_readme_and_has_an_example_in_its_help() -> None:
    for name in COMMANDS:
        assert f"goodhart-agent {name}" in README, name
        help_text = subprocess.run([sys.executable, "-m", "agent", name, "--help"], capture_output=True, text=True,
                                   timeout=60).stdout
        assert f"example: {EXAMPLES[name]}" in help_text, name


def test_every_option_of_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in README, f"{name} {option}"


def test_config_reference_is_generated_from_the_schema() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, "docs/config.md is stale: run python scripts/config_reference.py"


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "CI=true" in (ROOT / ".ci" / "run").read_text()
