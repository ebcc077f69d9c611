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
