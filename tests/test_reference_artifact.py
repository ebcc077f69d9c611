"""The reference as an artifact: export a store's fitted references, start a fresh agent from them.

A stream's first part (exactly ``reference_pairs`` audited outputs) is replayed into a kept state
dir and exported; a fresh agent given the artifact and only the rest of the stream takes exactly
the decisions the original agent took on the whole stream (same events, same times), without
warming up. Real replays, real SQLite stores, real files; the CLI round trip in subprocesses.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import AgentProcess, free_port, parse_metrics

from agent.clock import VirtualClock
from agent.config import ConfigError, config_from_mapping
from agent.pipeline import Pipeline
from agent.replay import replay
from agent.store import Store

T0 = 1_790_000_000.0
REFERENCE_PAIRS = 200
CHANGE_AT = 600  # the audit drops by 0.8 (residual s.d. units: 1) from this record on
ALL = "*"


def _records(n: int = 1200, seed: int = 5) -> list[dict[str, Any]]:
    """One record a second, each with its audit inline: a proxy that tracks quality, until CHANGE_AT."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = rng.gauss(0, 1)
        a = 0.6 * p + rng.gauss(0, 0.8) - (0.8 if i >= CHANGE_AT else 0.0)
        out.append({"id": f"o-{i}", "ts": T0 + i, "labels": {"segment": rng.choice(["a", "b"])},
                    "proxy": {"score": round(p, 6)}, "audit": {"quality": round(a, 6)}})
    return out


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _config(tmp: Path, state: str = "state", **detection: Any) -> dict[str, Any]:
    # detect every 10 s: the first part ends on a detect tick (record 200), so the original and the
    # fresh agent run their detect steps at the same virtual times
    return {"proxies": [{"name": "score", "field": "proxy.score"}],
            "audits": [{"name": "quality", "field": "audit.quality"}],
            "segments": {"field": "labels.segment"}, "state_dir": str(tmp / state),
            "schedule": {"detect_seconds": 10}, "detection": {"reference_pairs": REFERENCE_PAIRS, **detection}}


def _replay(tree: dict[str, Any], stream: Path, **kwargs: Any) -> list[dict[str, Any]]:
    events = io.StringIO()
    replay(config_from_mapping(tree, {}), stream, events, progress=io.StringIO(), **kwargs)
    return [json.loads(line) for line in events.getvalue().splitlines()]


def _export(tree: dict[str, Any], out: Path) -> dict[str, Any]:
    from agent.artifact import export_references, write_artifact

    config = config_from_mapping(tree, {})
    store = Store(config.state_dir, read_only=True)
    try:
        doc = export_references(config, store, now=T0 + 10_000)
    finally:
        store.close()
    write_artifact(doc, out)
    return doc


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The original agent on the whole stream, and an artifact of the references fitted on its first part."""
    tmp = tmp_path_factory.mktemp("artifact")
    records = _records()
    whole = _write(tmp / "whole.jsonl", records)
    first = _write(tmp / "first.jsonl", records[:REFERENCE_PAIRS])
    rest = _write(tmp / "rest.jsonl", records[REFERENCE_PAIRS:])
    original = _replay(_config(tmp, "unused"), whole)
    _replay(_config(tmp, "first"), first, state_dir=tmp / "first")
    doc = _export(_config(tmp, "first"), tmp / "reference.json")
    return {"tmp": tmp, "whole": whole, "rest": rest, "original": original, "doc": doc,
            "artifact": tmp / "reference.json"}


def _decisions(events: list[dict[str, Any]], segment: str = ALL) -> list[dict[str, Any]]:
    """What an alarm depends on; proxy_shift (an EWMA over every output seen, warm-up included) aside."""
    return [{k: v for k, v in e.items() if k != "proxy_shift"} for e in events if e["segment"] == segment]


def test_export_carries_the_fit_its_span_settings_and_hashes(fitted: dict[str, Any]) -> None:
    doc = fitted["doc"]
    assert doc["format"] == "goodhart-reference/1" and doc["agent_version"]
    assert doc["settings"]["reference_pairs"] == REFERENCE_PAIRS
    assert set(doc["config_parts"]) == {"proxies", "audits", "segments", "detection"}
    assert doc["config_hash"].startswith("sha256:")
    # the segments saw ~100 audited outputs each: their references come from the same span, pooled
    pairs = {p["segment"]: p for p in doc["pairs"]}
    assert sorted(pairs) == [ALL, "a", "b"] and doc["warming_up"] == []
    for segment, entry in pairs.items():
        assert (entry["proxy"], entry["audit"], entry["origin"]) == ("score", "quality", "fitted")
        assert (entry["fitted_from"], entry["fitted_to"]) == (T0, T0 + REFERENCE_PAIRS - 1), segment
    assert pairs["a"]["fit"]["n"] + pairs["b"]["fit"]["n"] == REFERENCE_PAIRS  # its own pairs of the span
    assert set(pairs[ALL]["detector"]["pool"]["segments"]) == {"a", "b"}  # the deviations, for later segments
    pair = pairs[ALL]
    fit = pair["fit"]
    assert fit["n"] == REFERENCE_PAIRS
    assert 0.4 < fit["slope"] < 0.8 and 0.6 < fit["residual_sd"] < 1.0  # the stream's 0.6 and 0.8
    assert abs(fit["proxy_mean"]) < 0.2 and abs(fit["audit_mean"]) < 0.2


def test_fresh_agent_alarms_exactly_when_the_original_did(fitted: dict[str, Any]) -> None:
    tmp = fitted["tmp"]
    imported = _replay(_config(tmp, "fresh", reference_file=str(fitted["artifact"])), fitted["rest"])
    after_fit = [e for e in fitted["original"] if e["ts"] > T0 + REFERENCE_PAIRS]
    mine = _decisions(imported)
    assert mine == _decisions(after_fit)
    alarms = [e for e in mine if e["state"] == "alarm"]
    assert alarms and alarms[0]["ts"] > T0 + CHANGE_AT  # the drop is caught, after it happened


def test_fresh_agent_does_not_warm_up_the_pairs_in_the_artifact(fitted: dict[str, Any]) -> None:
    tmp = fitted["tmp"]
    metrics = tmp / "fresh-metrics.txt"
    imported = _replay(_config(tmp, "fresh2", reference_file=str(fitted["artifact"])), fitted["rest"],
                       metrics_out=metrics)
    assert not [e for e in imported if e.get("reason") == "warming up"]  # segments came in the artifact too
    samples = parse_metrics(metrics.read_text())

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted({"proxy": "score", "audit": "quality", **labels}.items()))))

    assert value("goodhart_reference_info", segment=ALL, origin="imported") == 1.0
    assert value("goodhart_reference_info", segment="a", origin="imported") == 1.0
    assert value("goodhart_reference_start_timestamp_seconds", segment="a") == T0  # one span for all segments
    assert value("goodhart_reference_start_timestamp_seconds", segment=ALL) == T0  # the span of the original fit
    assert value("goodhart_reference_end_timestamp_seconds", segment=ALL) == T0 + REFERENCE_PAIRS - 1


def test_first_verdict_of_an_imported_pair_is_ready(fitted: dict[str, Any], tmp_path: Path) -> None:
    config = config_from_mapping(_config(tmp_path, reference_file=str(fitted["artifact"])), {})
    store = Store(tmp_path)
    pipeline = Pipeline(config, store, VirtualClock(T0))
    pipeline.detect()  # nothing audited yet
    verdicts = pipeline.view.snapshot.verdicts
    assert not verdicts[("score", "quality", ALL)].warming_up
    assert verdicts[("score", "quality", ALL)].threshold > 0
    store.close()


@pytest.mark.parametrize(("detection", "extra", "message"), [
    ({"reference_pairs": 100}, {}, "was fitted with reference_pairs=200, this config has 100"),
    ({"audits_between_false_alarms": 1000}, {}, "was fitted with arl0=200000.0, this config has 2000.0"),
    ({}, {"proxies": [{"name": "score", "field": "proxy.score", "direction": "lower"}]},
     "was fitted with other proxies than this config has"),
    ({}, {"segments": {"field": "labels.tier"}}, "was fitted with other segments than this config has"),
])
def test_an_artifact_fitted_under_another_config_is_refused_at_start(
        fitted: dict[str, Any], tmp_path: Path, detection: dict[str, Any], extra: dict[str, Any],
        message: str) -> None:
    artifact = fitted["artifact"]
    tree = {**_config(tmp_path, reference_file=str(artifact)), **extra}
    tree["detection"].update(detection)
    store = Store(tmp_path)
    with pytest.raises(ConfigError) as err:
        Pipeline(config_from_mapping(tree, {}), store, VirtualClock(T0))
    store.close()
    [problem] = err.value.problems
    assert problem.startswith(f"detection.reference_file: {artifact} {message}"), problem


def test_the_settings_mismatch_reads_as_one_line(fitted: dict[str, Any], tmp_path: Path) -> None:
    tree = _config(tmp_path, reference_file=str(fitted["artifact"]), reference_pairs=100)
    store = Store(tmp_path)
    with pytest.raises(ConfigError) as err:
        Pipeline(config_from_mapping(tree, {}), store, VirtualClock(T0))
    store.close()
    assert err.value.problems == [
        f"detection.reference_file: {fitted['artifact']} was fitted with reference_pairs=200, this config has 100"]


def _corrupt(doc: dict[str, Any], path: Path, how: str) -> None:
    if how == "truncated":
        path.write_text(json.dumps(doc)[:500])
    elif how == "not json":
        path.write_bytes(b"\xff\xfe binary")
    elif how == "other format":
        path.write_text(json.dumps({"format": "something-else"}))
    elif how == "broken thresholds":
        bad = json.loads(json.dumps(doc))
        bad["pairs"][0]["detector"]["thresholds"] = {"level": [1.0]}
        path.write_text(json.dumps(bad))
    elif how == "unknown proxy":
        bad = json.loads(json.dumps(doc))
        bad["pairs"][0]["proxy"] = "nope"
        path.write_text(json.dumps(bad))


@pytest.mark.parametrize(("how", "message"), [
    ("missing", "cannot be read: No such file or directory"),
    ("truncated", "is not valid JSON (line 1"),
    ("not json", "is not UTF-8 text"),
    ("other format", "is not a reference artifact (format 'something-else'"),
    ("broken thresholds", "pairs[0] (score/quality/*): pinned reference's thresholds do not match its CUSUMs"),
    ("unknown proxy", "pairs[0]: not a pair of this config's proxies and audits"),
])
def test_a_corrupt_or_unreadable_artifact_is_a_clear_error(fitted: dict[str, Any], tmp_path: Path, how: str,
                                                           message: str) -> None:
    path = tmp_path / "reference.json"
    _corrupt(fitted["doc"], path, how)
    store = Store(tmp_path)
    with pytest.raises(ConfigError) as err:
        Pipeline(config_from_mapping(_config(tmp_path, reference_file=str(path)), {}), store, VirtualClock(T0))
    store.close()
    [problem] = err.value.problems
    assert problem.startswith(f"detection.reference_file: {path} ") and message in problem, problem


def test_a_rebaseline_after_import_survives_a_restart_and_a_new_file_is_applied(fitted: dict[str, Any],
                                                                                tmp_path: Path) -> None:
    key = ("score", "quality", ALL)
    config = config_from_mapping(_config(tmp_path, reference_file=str(fitted["artifact"])), {})
    store = Store(tmp_path)
    pipeline = Pipeline(config, store, VirtualClock(T0))
    assert pipeline.view.snapshot.references[key].origin == "imported"
    pipeline.rebaseline(segment=ALL)
    assert key not in pipeline.view.snapshot.references
    store.close()

    store = Store(tmp_path)  # restart with the same reference_file: the rebaseline stands
    pipeline = Pipeline(config, store, VirtualClock(T0 + 60))
    assert key not in pipeline.view.snapshot.references
    assert store.reference_imports()[json.dumps(list(key))].rebaselined_at == T0
    store.close()

    renewed = tmp_path / "renewed.json"  # a new reviewed file (another digest) is a new pin: applied once
    renewed.write_text(json.dumps({**fitted["doc"], "exported_at": T0 + 20_000}))
    config = config_from_mapping(_config(tmp_path, reference_file=str(renewed)), {})
    store = Store(tmp_path)
    assert Pipeline(config, store, VirtualClock(T0 + 120)).view.snapshot.references[key].origin == "imported"
    store.close()


def test_a_restart_with_the_same_file_resumes_the_detector(fitted: dict[str, Any], tmp_path: Path) -> None:
    """The file is not re-applied to a pair that already started from it: its CUSUMs carry on."""
    tree = _config(tmp_path, reference_file=str(fitted["artifact"]))
    rest = [json.loads(line) for line in fitted["rest"].read_text().splitlines()]
    config = config_from_mapping(tree, {})
    clock = VirtualClock(T0)
    store = Store(tmp_path)
    pipeline = Pipeline(config, store, clock)
    pipeline.store_items("test", rest[600:700])  # after the drop
    clock.advance_to(T0 + 1000)
    pipeline.detect()
    statistic = pipeline.view.snapshot.verdicts[("score", "quality", ALL)].statistic
    pipeline.checkpoint()
    store.close()
    store = Store(tmp_path)
    pipeline = Pipeline(config, store, clock)
    pipeline.detect()
    assert statistic > 0 and pipeline.view.snapshot.verdicts[("score", "quality", ALL)].statistic == statistic
    store.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_round_trip_export_import_and_export_from_a_running_daemon(fitted: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    first = [json.loads(line) for line in fitted["whole"].read_text().splitlines()][:REFERENCE_PAIRS]
    stream = _write(tmp_path / "first.jsonl", first)
    original = tmp_path / "original.yaml"
    original.write_text(yaml.safe_dump(_config(tmp_path, "original")))
    done = _cli("replay", "--config", str(original), str(stream), "--events-out", str(tmp_path / "events.jsonl"),
                "--state-dir", str(tmp_path / "original"))
    assert done.returncode == 0, done.stderr
    artifact = tmp_path / "reference.json"
    done = _cli("reference", "export", "--config", str(original), "--out", str(artifact))
    assert done.returncode == 0, done.stderr
    assert "exported 3 references (0 pairs still warming up)" in done.stderr
    assert json.loads(artifact.read_text())["pairs"][0]["fitted_to"] == T0 + REFERENCE_PAIRS - 1

    # a mismatched config is refused with the file's name and the difference (exit 2)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(_config(tmp_path, "other", reference_pairs=100)))
    done = _cli("reference", "import", "--config", str(other), str(artifact))
    assert done.returncode == 2
    assert f"{artifact} was fitted with reference_pairs=200, this config has 100" in done.stderr

    # import into a fresh state dir; the daemon started on it does not warm up the pair
    port = free_port()
    live = _config(tmp_path, "fresh")
    live.update(source={"type": "jsonl", "path": str(tmp_path / "live.jsonl")}, listen=f"127.0.0.1:{port}")
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(yaml.safe_dump(live))
    (tmp_path / "live.jsonl").write_text("")
    done = _cli("reference", "import", "--config", str(fresh), str(artifact))
    assert done.returncode == 0, done.stderr
    assert "imported 3 references" in done.stdout
    agent = AgentProcess(fresh, port, tmp_path / "agent.log").start()
    try:
        assert agent.value("goodhart_reference_info", proxy="score", audit="quality", segment=ALL,
                           origin="imported") == 1.0
        # the daemon holds the state dir: import is refused, export reads it alongside
        done = _cli("reference", "import", "--config", str(fresh), str(artifact))
        assert done.returncode == 1 and "stop it first" in done.stderr
        again = tmp_path / "again.json"
        done = _cli("reference", "export", "--config", str(fresh), "--out", str(again))
        assert done.returncode == 0, done.stderr
        pairs = json.loads(again.read_text())["pairs"]
        assert [p["origin"] for p in pairs] == ["imported"] * 3
        assert [p["detector"] for p in pairs] == [p["detector"] for p in json.loads(artifact.read_text())["pairs"]]
    finally:
        agent.terminate()

    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(yaml.safe_dump(_config(tmp_path, "x", reference_file=str(artifact))))
    done = _cli("check-config", str(pinned))
    assert done.returncode == 0 and f"reference file: 3 pairs start from {artifact}" in done.stdout
    # the daemon refuses to start on a mismatched artifact, with the same line (exit 2)
    refused = _config(tmp_path, "refused", reference_file=str(artifact), reference_pairs=100)
    refused.update(source={"type": "jsonl", "path": str(tmp_path / "live.jsonl")}, listen=f"127.0.0.1:{free_port()}")
    (tmp_path / "refused.yaml").write_text(yaml.safe_dump(refused))
    done = _cli("run", "--config", str(tmp_path / "refused.yaml"))
    assert done.returncode == 2
    assert f"detection.reference_file: {artifact} was fitted with reference_pairs=200" in done.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(_config(tmp_path, "x", reference_file=str(tmp_path / "absent.json"))))
    done = _cli("check-config", str(broken))
    assert done.returncode == 2 and "detection.reference_file:" in done.stderr and "cannot be read" in done.stderr


def test_export_without_a_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, "never-ran")))
    assert main(["reference", "export", "--config", str(config)]) == 1
    assert f"no store at {tmp_path / 'never-ran'}" in capsys.readouterr().err
    assert not (tmp_path / "never-ran").exists()  # a reader creates nothing


def test_replay_keeps_its_store_only_in_an_empty_state_dir(fitted: dict[str, Any], tmp_path: Path) -> None:
    tree = _config(tmp_path)
    _replay(tree, fitted["rest"], state_dir=tmp_path / "kept")
    with pytest.raises(ConfigError) as err:
        _replay(tree, fitted["rest"], state_dir=tmp_path / "kept")
    assert err.value.problems == [f"--state-dir: {tmp_path / 'kept'} already holds a store; replay starts from an "
                                  "empty one"]
