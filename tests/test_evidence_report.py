"""Why it alarmed: evidence, the HTML report and the status page, on a stream whose proxy is gamed.

The stream comes from the demo's support bot (agent/demo_world.py): from output CHANGE_AT on it
games its proxies (more thumbs-up, fewer conversations really resolved). Everything runs for real:
``replay`` into a kept state dir, the CLI as a subprocess, the daemon as a subprocess tailing the
file, and Debian's Chromium rendering the pages headless.
"""

from __future__ import annotations

import heapq
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from support import AgentProcess, wait_until

from agent.config import config_from_mapping
from agent.demo_world import SupportBot
from agent.evidence import directions_of, evidence, read_snapshot
from agent.replay import replay
from agent.store import Store

OUTPUTS = 4000
CHANGE_AT = 2400
T0 = time.time() - OUTPUTS - 600  # recent, so retention keeps every audited output
CONFIG: dict[str, Any] = {
    "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
    "audits": [{"name": "resolved", "field": "audit.resolved"}],
}
ROOT = Path(__file__).resolve().parent.parent


def gamed_stream(path: Path, seed: int = 3) -> tuple[Path, set[str]]:
    """Outputs one second apart, a late label for every second output two minutes later; the bot
    games its proxies from output CHANGE_AT (time ``T0 + CHANGE_AT``) on. Returns the ids written."""
    bot = SupportBot(seed)
    labels: list[tuple[float, int, str]] = []
    ids: set[str] = set()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(OUTPUTS):
            ts = T0 + i
            while labels and labels[0][0] <= ts:
                f.write(heapq.heappop(labels)[2] + "\n")
            record, resolved = bot.conversation(ts, gamed=i >= CHANGE_AT)
            ids.add(record["id"])
            f.write(json.dumps(record) + "\n")
            if i % 2 == 0:
                heapq.heappush(labels, (ts + 120, i, json.dumps(
                    {"id": record["id"], "ts": ts + 120, "audit": {"resolved": resolved}})))
        while labels:
            f.write(heapq.heappop(labels)[2] + "\n")
    return path, ids


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The gamed stream replayed once into a kept state dir, with text excerpts on."""
    tmp = tmp_path_factory.mktemp("replayed")
    stream, ids = gamed_stream(tmp / "stream.jsonl")
    mapping = {**CONFIG, "state_dir": str(tmp / "state"), "evidence": {"keep_text": True, "max_items": 40}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(mapping))
    events = io.StringIO()
    summary = replay(config_from_mapping(mapping, {}), stream, events, progress=io.StringIO(),
                     state_dir=tmp / "state")
    return {"tmp": tmp, "stream": stream, "ids": ids, "config": tmp / "config.yaml", "mapping": mapping,
            "summary": summary, "events": [json.loads(line) for line in events.getvalue().splitlines()]}


def check_evidence(doc: dict[str, Any], ids: set[str], state: str = "alarm") -> None:
    """Items mostly from after the change, most adverse first, all real ids of the input."""
    assert doc["state"] == state
    items = doc["items"]
    assert len(items) >= 10
    assert {i["id"] for i in items} <= ids
    residuals = [i["residual"] for i in items]
    assert residuals == sorted(residuals)
    assert all(abs(i["audit"] - i["predicted"] - i["residual"]) < 1e-9 for i in items)
    after = sum(1 for i in items if i["ts"] >= T0 + CHANGE_AT)
    assert after >= 0.8 * len(items), [i["ts"] - T0 for i in items]


# -- evidence from a kept replay -------------------------------------------------------------------
def test_replay_keeps_its_state_and_the_pair_alarms_after_the_change(replayed: dict[str, Any]) -> None:
    assert ("thumbs_up", "resolved", "*") in replayed["summary"].alarms
    alarm = next(e for e in replayed["events"] if e["state"] == "alarm")
    assert alarm["ts"] >= T0 + CHANGE_AT


def test_evidence_lists_the_most_adverse_outputs_of_the_excursion(replayed: dict[str, Any]) -> None:
    config = config_from_mapping(replayed["mapping"], {})
    store = Store(replayed["tmp"] / "state", read_only=True)
    try:
        snapshot = read_snapshot(config, store)
        doc = evidence(store, snapshot, ("thumbs_up", "resolved", "*"), directions_of(config), config.evidence)
        assert doc is not None
        check_evidence(doc, replayed["ids"])
        assert len(doc["items"]) == 40  # evidence.max_items bounds it
        assert doc["since"] >= T0 + CHANGE_AT - 300
        assert all(i["output"] and i["input"] for i in doc["items"])  # keep_text is on: excerpts
        few = evidence(store, snapshot, ("thumbs_up", "resolved", "*"), directions_of(config), config.evidence, 5)
        assert few is not None and few["items"] == doc["items"][:5]
        assert evidence(store, snapshot, ("thumbs_up", "nope", "*"), directions_of(config), config.evidence) is None
    finally:
        store.close()


def test_a_read_only_store_refuses_writes(replayed: dict[str, Any]) -> None:
    store = Store(replayed["tmp"] / "state", read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.set_cursor("detect.pairs", 0)
    finally:
        store.close()


def test_without_keep_text_no_text_is_stored(tmp_path: Path, replayed: dict[str, Any]) -> None:
    mapping = {**CONFIG, "state_dir": str(tmp_path / "state")}
    replay(config_from_mapping(mapping, {}), replayed["stream"], io.StringIO(), progress=io.StringIO(),
           state_dir=tmp_path / "state")
    conn = sqlite3.connect(tmp_path / "state" / "goodhart.db")
    assert conn.execute("SELECT count(*) FROM excerpts").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM verdicts").fetchone()[0] > 0  # the report's history is kept
    conn.close()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout)


def test_evidence_cli_reads_a_replays_state_dir(replayed: dict[str, Any]) -> None:
    done = cli("evidence", "--config", str(replayed["config"]), "--proxy", "thumbs_up", "--audit", "resolved")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["proxy"], doc["audit"], doc["segment"]) == ("thumbs_up", "resolved", "*")
    check_evidence(doc, replayed["ids"])
    unknown = cli("evidence", "--config", str(replayed["config"]), "--proxy", "thumbsup", "--audit", "resolved")
    assert unknown.returncode == 2 and "no pair thumbsup vs resolved" in unknown.stderr


def test_replay_refuses_a_state_dir_that_holds_a_store(replayed: dict[str, Any]) -> None:
    done = cli("replay", "--config", str(replayed["config"]), str(replayed["stream"]), "--events-out",
               str(replayed["tmp"] / "again.jsonl"), "--state-dir", str(replayed["tmp"] / "state"))
    assert done.returncode == 2 and "already holds a store" in done.stderr


# -- the report ------------------------------------------------------------------------------------
RESOURCE = re.compile(r"""(?:src|href)\s*=\s*["']?(?!data:|#)[a-z]+:|url\(\s*["']?(?!data:)[a-z]+:|https?://""", re.I)


def check_report(page: str) -> None:
    assert not RESOURCE.search(page), RESOURCE.search(page)
    assert "<script" not in page
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 3
    assert "thumbs_up" in page and "resolved" in page
    assert "ALARMED" in page and "1 pair(s) in alarm" in page
    assert "at this proxy level the reference promises" in page


@pytest.mark.slow
def test_report_replays_a_stream_into_one_self_contained_file(tmp_path: Path, replayed: dict[str, Any]) -> None:
    out = tmp_path / "report.html"
    done = cli("report", "--config", str(replayed["config"]), str(replayed["stream"]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    check_report(out.read_text(encoding="utf-8"))
    again = tmp_path / "from-state.html"  # and from a state dir, without input
    done = cli("report", "--config", str(replayed["config"]), "--out", str(again))
    assert done.returncode == 0, done.stderr
    check_report(again.read_text(encoding="utf-8"))
    png = render(out, tmp_path / "report.png")
    keep_screenshot(png, "report.png")


def test_report_without_matplotlib_says_how_to_install_it(tmp_path: Path, replayed: dict[str, Any]) -> None:
    """A directory shadowing matplotlib with a module that fails to import stands in for its absence."""
    shadow = tmp_path / "shadow"
    (shadow / "matplotlib").mkdir(parents=True)
    (shadow / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    # find_spec finds the shadow package; report_available must say no only when import fails
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "agent", "report", "--config", str(replayed["config"]), "--out",
                           str(tmp_path / "r.html")], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "pip install 'goodhart-agent[report]'" in done.stderr
    assert not (tmp_path / "r.html").exists()


# -- the running daemon ----------------------------------------------------------------------------
@pytest.mark.slow
def test_running_daemon_serves_evidence_status_and_report(tmp_path: Path, agent_factory: Any) -> None:
    full, ids = gamed_stream(tmp_path / "recorded.jsonl")
    stream = tmp_path / "outputs.jsonl"
    stream.touch()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        **CONFIG, "source": {"type": "jsonl", "path": str(stream), "start_at": "beginning"},
        "state_dir": str(tmp_path / "state"), "evidence": {"max_items": 30, "history_seconds": 0.1},
        "schedule": {"ingest_seconds": 0.2, "detect_seconds": 0.5}, "log": {"level": "WARNING"}}))
    agent: AgentProcess = agent_factory(config).start()
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    chunk = len(lines) // 12 + 1
    for start in range(0, len(lines), chunk):  # the stream arrives over a dozen detect steps
        with open(stream, "a", encoding="utf-8") as f:
            f.writelines(lines[start:start + chunk])
        written = min(len(lines), start + chunk)
        wait_until(lambda: (agent.value("goodhart_records_total", source="jsonl") or 0) >= written,  # noqa: B023
                   what="the chunk ingested")
        runs = detect_runs(agent)
        wait_until(lambda: detect_runs(agent) > runs, what="a detect step")  # noqa: B023
    wait_until(lambda: agent.value("goodhart_divergence_alarm", proxy="thumbs_up", audit="resolved", segment="*")
               == 1.0, timeout=60, what="the alarm")
    url = agent.url + "/v1/evidence"
    resp = requests.get(url, params={"proxy": "thumbs_up", "audit": "resolved", "segment": "*", "limit": 20},
                        timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    doc = resp.json()
    check_evidence(doc, ids)
    assert len(doc["items"]) == 20 and "input" not in doc["items"][0]  # keep_text is off by default
    missing = requests.get(url, params={"proxy": "thumbs_up", "audit": "nope"}, timeout=10)
    assert missing.status_code == 404 and "no pair" in missing.json()["error"]
    assert requests.get(url, params={"proxy": "thumbs_up"}, timeout=10).status_code == 400
    status = requests.get(agent.url + "/", timeout=10)
    assert status.status_code == 200 and status.headers["Content-Type"].startswith("text/html")
    row = re.search(r"<tr><td>thumbs_up vs resolved \[\*\]</td><td>(.*?)</tr>", status.text)
    assert row and 'class="badge alarm"' in row.group(1)
    assert "audit fell below what the reference predicts" in row.group(1)
    assert "<svg" in status.text  # the statistic's sparkline, from the verdicts recorded step by step
    for link in ('href="/report"', 'href="/metrics"', 'href="/v1/events"', 'href="/v1/evidence?'):
        assert link in status.text
    beside = cli("evidence", "--config", str(config), "--proxy", "thumbs_up", "--audit", "resolved")  # read-only
    assert beside.returncode == 0, beside.stderr
    check_evidence(json.loads(beside.stdout), ids)
    report = requests.get(agent.url + "/report", timeout=120)
    assert report.status_code == 200
    check_report(report.text)
    page = tmp_path / "status.html"
    page.write_text(status.text, encoding="utf-8")
    keep_screenshot(render(page, tmp_path / "status.png"), "status.png")


def detect_runs(agent: AgentProcess) -> float:
    return agent.value("goodhart_job_runs_total", task="detect") or 0.0


# -- headless Chromium -----------------------------------------------------------------------------
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not found (apt-get install chromium; scripts/test.sh does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def render(page: Path, png: Path) -> Path:
    """Screenshot ``page`` in headless Chromium (no network), and fail on any console error."""
    profile = png.parent / f"chromium-{png.stem}"
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--screenshot={png}",
         "--window-size=1280,2000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image  # comes with matplotlib (the report extra)

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 1
    return png


def keep_screenshot(png: Path, name: str) -> None:
    """With GOODHART_SCREENSHOTS=DIR, keep a small copy (half size, 128 colours) for the docs."""
    target = os.environ.get("GOODHART_SCREENSHOTS")
    if not target:
        return
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
        small.quantize(colors=128).save(Path(target) / name, optimize=True)


# -- the status page, in process ---------------------------------------------------------------------
def test_status_page_says_what_is_warming_up_and_why(tmp_path: Path) -> None:
    from agent.clock import VirtualClock
    from agent.pipeline import Pipeline
    from agent.report.status import render_status

    pipeline = Pipeline(config_from_mapping(CONFIG, {}), Store(tmp_path), VirtualClock(T0))
    items = [{"id": f"w{i}", "ts": T0 + i, "proxy": {"thumbs_up": i % 2}, "audit": {"resolved": i % 2}}
             for i in range(37)]
    items += [{"id": "waiting", "ts": T0 + 40, "proxy": {"thumbs_up": 1}}]
    pipeline.ingest_items("test", items)
    pipeline.detect()
    page = render_status(pipeline.view, {"source": lambda: False}, "test", report=False)
    assert "thumbs_up vs resolved [*]: 37 of 200 audited outputs for its reference" in page
    assert "no pair has a reference yet" in page
    assert re.search(r"<td>source</td><td><span class=\"badge alarm\">down</span>", page)
    assert "pip install 'goodhart-agent[report]'" in page and 'href="/report"' not in page
    empty = Pipeline(config_from_mapping(CONFIG, {}), Store(tmp_path / "empty"), VirtualClock(T0))
    empty.ingest_items("test", [items[-1]])
    empty.detect()
    assert "0 of 200 audited outputs for its reference (none yet: 1 outputs wait for a label" in render_status(
        empty.view, {}, "test", report=True)
