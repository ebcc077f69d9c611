"""The soak benchmark, run briefly: it drives a real daemon and checks its own counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_short_soak_counts_every_record_and_samples_the_process(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--seconds", "4", "--rate", "50", "--batch", "5",
                           "--sample-seconds", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["counts_exact"] and result["sent"] >= 150
    assert result["sent"] == result["stored"]
    assert len(result["samples"]) >= 3
    assert all(s["rss_mib"] > 0 and s["threads"] >= 1 and s["fds"] >= 3 for s in result["samples"])
    assert "exact: True" in done.stdout
