"""demo: the real daemon watching a simulated bot; quiet while healthy, alarms once it games."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from support import free_port, parse_metrics


@pytest.mark.slow
def test_demo_alarms_only_after_the_bot_starts_gaming() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "demo", "--listen", f"127.0.0.1:{port}", "--speedup", "20",
                             "--change-after", "200", "--duration", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    scraped = None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if "ALARM" in line and scraped is None:
            scraped = parse_metrics(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    assert proc.wait(timeout=60) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert f"http://127.0.0.1:{port}/metrics" in lines[0]
    deployed = next(i for i, line in enumerate(lines) if "bot-v2 deployed" in line)
    alarms = [i for i, line in enumerate(lines) if "ALARM" in line]
    assert alarms, text
    assert min(alarms) > deployed, text
    assert any("[*]" in lines[i] for i in alarms), text
    assert scraped is not None
    in_alarm = [labels for (name, labels), value in scraped.items()
                if name == "goodhart_divergence_alarm" and value == 1]
    assert in_alarm
