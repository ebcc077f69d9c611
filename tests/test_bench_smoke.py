"""The benchmarks whose figures the README quotes still run (tiny sizes; the figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_push_rate_benchmark_runs_and_prints_both_rates() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.push_rate", "--pushes", "20", "--batch", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "single-record pushes:" in done.stdout and "5-record pushes:" in done.stdout


@pytest.mark.slow
def test_replay_speed_compares_the_checkout_it_is_given_even_when_run_from_another(tmp_path: Path) -> None:
    """``-m`` puts the working directory first on sys.path: run from this checkout, ``--compare DIR``
    once timed this checkout twice. A stand-in agent in DIR says whether it was the one that ran."""
    other = tmp_path / "other"
    (other / "agent").mkdir(parents=True)
    marker = tmp_path / "ran.txt"
    (other / "agent" / "__init__.py").write_text("")
    (other / "agent" / "__main__.py").write_text(
        f"import pathlib\nwith open({str(marker)!r}, 'a') as f:\n    f.write('ran\\n')\n")
    done = subprocess.run([sys.executable, "-m", "bench.replay_speed", "--records", "300", "--runs", "1",
                           "--compare", str(other)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[this] replay:" in done.stdout and "[compared] replay:" in done.stdout
    assert marker.read_text().count("ran") == 3  # the untimed warm-up, the whole stream, one record
