"""``scripts/attacks.py`` reruns the attacks of docs/hardening.md against the real agent and
regenerates its table: the table and the script's attack list must agree row for row."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import attacks  # noqa: E402
from attack_catalogue import ATTACKS  # noqa: E402


def rows(doc: Path) -> list[list[str]]:
    """The cells of each table row between the markers (header and separator excluded)."""
    section = doc.read_text().partition(attacks.BEGIN)[2].partition(attacks.END)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]


def test_the_attack_ids_are_unique_and_every_attack_names_its_guard() -> None:
    ids = [a.id for a in ATTACKS]
    assert len(ids) == len(set(ids)) >= 18
    assert all(a.attack and a.before and a.defence and a.test for a in ATTACKS)


def test_the_documented_table_has_one_row_per_attack_of_the_script_in_order_all_held() -> None:
    doc = ROOT / "docs" / "hardening.md"
    assert attacks.documented_ids(doc) == [a.id for a in ATTACKS]
    for cells, item in zip(rows(doc), ATTACKS, strict=True):
        assert len(cells) == 7, cells
        assert cells[1] == item.attack and cells[2] == item.before and cells[6] == item.test
        assert cells[5] == "held", cells  # the committed run held everywhere


def test_write_replaces_only_the_table_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "hardening.md"
    doc.write_text(f"intro\n{attacks.BEGIN}\nold table\n{attacks.END}\noutro\n")
    results = [(item, attacks.Result("figure | with a bar", item.id != "6"), 0.0) for item in ATTACKS]
    attacks.rewrite(doc, attacks.table(results))
    text = doc.read_text()
    assert text.startswith(f"intro\n{attacks.BEGIN}\n| # |") and text.endswith(f"{attacks.END}\noutro\n")
    assert "old table" not in text
    assert attacks.documented_ids(doc) == [a.id for a in ATTACKS]
    assert [cells[5] for cells in rows(doc)].count("**failed**") == 1
    assert all(cells[4] == "figure \\| with a bar" for cells in rows(doc))


def test_unknown_ids_and_write_with_only_are_refused() -> None:
    for argv in (["--only", "99"], ["--only", "6", "--write"]):
        run = subprocess.run([sys.executable, str(ROOT / "scripts" / "attacks.py"), *argv], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2 and "error:" in run.stderr, run


@pytest.mark.slow
def test_the_script_runs_every_attack_against_the_real_agent_and_all_hold(tmp_path: Path) -> None:
    doc = tmp_path / "hardening.md"
    shutil.copy(ROOT / "docs" / "hardening.md", doc)
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "attacks.py"), "--write", "--doc", str(doc)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert attacks.documented_ids(doc) == [a.id for a in ATTACKS]
    assert all(cells[5] == "held" for cells in rows(doc))
    assert run.stderr.strip().splitlines()[-1].startswith(f"{len(ATTACKS)} of {len(ATTACKS)} held")
