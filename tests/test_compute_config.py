"""Bad computed proxies are config errors with their key path: `check-config` exits 2, one line each.

Regexes are compiled and models loaded (and made to score a text) when the computers are built,
which the CLI does right after validating the config, so a typo or a wrong file fails `check-config`
and the daemon's start, never the first record. The config itself checks only shape.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compute_support import train_model

from agent.cli import main
from agent.compute import build_computers, load_and_build
from agent.config import ConfigError, config_from_mapping
from agent.records import RecordParser


def write(path: Path, *proxies: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"proxies": list(proxies), "audits": [{"name": "resolved", "field": "audit.ok"}]}))
    return path


def check(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str]]:
    code = main(["check-config", str(config)])
    return code, capsys.readouterr().err.splitlines()


def test_a_bad_regex_fails_check_config_with_its_key_path(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"name": "thumbs_up", "field": "proxy.thumbs_up"},
                   {"name": "refusal", "compute": {"kind": "match", "regex": "(I can(no|')t"}})
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "proxies.1.compute.regex: not a valid regular expression: missing ) at position 13"]


@pytest.mark.slow
def test_a_file_that_is_not_a_skops_model_fails_check_config(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"not": "a model"}))
    config = write(tmp_path / "c.yaml",
                   {"name": "thumbs", "compute": {"kind": "model", "path": str(tmp_path / "model.pkl")}})
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"proxies.0.compute.path: {tmp_path / 'model.pkl'} is not a skops file")


def test_every_problem_is_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "c.yaml",
                   {"name": "a", "compute": {"kind": "match", "regex": "[unclosed"}},
                   {"name": "b", "compute": {"kind": "model", "path": str(tmp_path / "missing.skops")}},
                   {"name": "c", "compute": {"kind": "length", "unit": "pages"}},
                   {"name": "d", "compute": {"kind": "sentiment"}},
                   {"name": "e", "field": "proxy.e", "compute": {"kind": "length"}},
                   {"name": "f", "compute": {"kind": "match", "regex": "x", "keywords": ["y"]}},
                   {"name": "g", "compute": {"kind": "duration", "start": "opened_at"}},
                   {"name": "h", "compute": {"kind": "json_valid", "schema": {"type": "objekt"}}},
                   {"name": "i", "compute": {"kind": "json_valid", "schema": str(tmp_path / "nope.json")}},
                   {"name": "j", "compute": {"kind": "length", "units": "words"}})
    code, lines = check(capsys, config)
    assert code == 2
    assert lines == [
        "proxies.0.compute.regex: not a valid regular expression: unterminated character set at position 9",
        f"proxies.1.compute.path: cannot read {tmp_path / 'missing.skops'}: No such file or directory",
        "proxies.2.compute.unit: Input should be 'chars', 'words' or 'tokens'",
        "proxies.3.compute.kind: expected one of length, duration, match, json_valid, model",
        "proxies.4: set exactly one of field, compute",
        "proxies.5.compute: set exactly one of regex, keywords",
        "proxies.6.compute.end: Field required",
        "proxies.7.compute.schema: not a valid JSON Schema at /type: 'objekt' is not valid under any of the given"
        " schemas",
        f"proxies.8.compute.schema: cannot read {tmp_path / 'nope.json'}: No such file or directory",
        "proxies.9.compute.units: unknown key",
    ]


def test_a_model_needing_untrusted_types_is_refused_unless_they_are_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import html

    train_model(tmp_path / "m.skops", preprocessor=html.unescape)  # a function skops does not trust by default
    spec = {"kind": "model", "path": str(tmp_path / "m.skops")}
    code, lines = check(capsys, write(tmp_path / "c.yaml", {"name": "thumbs", "compute": spec}))
    assert code == 2
    assert lines == [f"proxies.0.compute.path: {tmp_path / 'm.skops'} needs types skops does not trust:"
                     " html.unescape; list them under trusted only if you trust whoever made the file"]
    trusted = {**spec, "trusted": ["html.unescape"]}
    assert check(capsys, write(tmp_path / "c.yaml", {"name": "thumbs", "compute": trusted}))[0] == 0


def test_a_model_that_cannot_score_text_or_lacks_the_class_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from compute_support import skops_io
    from sklearn.linear_model import LinearRegression

    skops_io().dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), tmp_path / "numeric.skops")
    train_model(tmp_path / "text.skops")
    code, lines = check(capsys, write(
        tmp_path / "c.yaml",
        {"name": "a", "compute": {"kind": "model", "path": str(tmp_path / "numeric.skops")}},
        {"name": "b", "compute": {"kind": "model", "path": str(tmp_path / "text.skops"), "positive_class": "yes"}},
        {"name": "c", "compute": {"kind": "model", "path": str(tmp_path / "text.skops"), "output": "predict",
                                  "positive_class": 1}}))
    assert code == 2
    assert lines[0].startswith(f"proxies.0.compute.path: the model in {tmp_path / 'numeric.skops'} cannot score"
                               " a text: ValueError")
    assert lines[1:] == ["proxies.1.compute.path: positive_class 'yes' is not among the model's classes [0, 1]",
                         "proxies.2.compute.path: positive_class applies only to output proba"]


def test_good_computed_proxies_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_model(tmp_path / "m.skops")
    (tmp_path / "schema.json").write_text('{"type": "object", "required": ["intent"]}')
    config = write(tmp_path / "c.yaml",
                   {"name": "words", "compute": {"kind": "length"}},
                   {"name": "handle_seconds", "direction": "lower",
                    "compute": {"kind": "duration", "start": "opened_at", "end": "closed_at"}},
                   {"name": "refusal", "direction": "lower", "compute": {"kind": "match", "keywords": ["I can't"]}},
                   {"name": "valid", "compute": {"kind": "json_valid", "schema": str(tmp_path / "schema.json")}},
                   {"name": "thumbs", "compute": {"kind": "model", "path": str(tmp_path / "m.skops"),
                                                  "positive_class": 1}})
    assert main(["check-config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("ok: 5 proxies x 1 audits = 5 pairs")


BAD_REGEX = {"proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
                         {"name": "refusal", "compute": {"kind": "match", "regex": "[unclosed"}}],
             "audits": [{"name": "resolved", "field": "audit.ok"}]}
BAD_REGEX_LINE = "proxies.1.compute.regex: not a valid regular expression: unterminated character set at position 9"


def test_the_config_checks_shape_and_building_reports_the_key_path() -> None:
    config = config_from_mapping(BAD_REGEX, environ={})  # a well-formed spec: shape is fine
    with pytest.raises(ConfigError) as err:
        build_computers(config)
    assert err.value.problems == [BAD_REGEX_LINE]


def test_a_record_parser_for_an_unbuildable_config_raises_config_error() -> None:
    """What the daemon and replay hit when they build their pipeline from such a config."""
    with pytest.raises(ConfigError) as err:
        RecordParser(config_from_mapping(BAD_REGEX, environ={}))
    assert err.value.problems == [BAD_REGEX_LINE]


def test_load_and_build_returns_the_config_and_its_computers(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", {"name": "words", "compute": {"kind": "length"}},
                 {"name": "sorry", "compute": {"kind": "match", "keywords": ["sorry"]}})
    config, computers = load_and_build(path, environ={})
    assert [p.name for p in config.proxies] == list(computers) == ["words", "sorry"]
    assert computers["sorry"]({"output": "So sorry!"}) == 1.0
    assert RecordParser(config, computers).computers == computers


def test_build_problems_sit_among_shape_problems_in_key_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "id_field": "a..b",
        "proxies": [{"name": "BAD"}, {"name": "r", "compute": {"kind": "match", "regex": "("}}, {"name": "c"}],
        "audits": [], "log": {"level": "loud"}}))
    with pytest.raises(ConfigError) as err:
        load_and_build(path, environ={})
    assert [line.partition(":")[0] for line in err.value.problems] == [
        "id_field", "proxies.0.name", "proxies.1.compute.regex", "proxies.2", "audits", "log.level"]
