"""Shared by the computed-metric tests: a small text model trained here and saved with skops, and a
stream of records exercising every compute kind with its expected proxy values."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

T0 = 1_790_000_000.0
POSITIVE = ["thanks that fixed it", "great help, all working now", "perfect, solved", "works now thank you"]
NEGATIVE = ["still broken", "this did not help at all", "wrong answer again", "useless, nothing works"]


def skops_io() -> Any:
    """skops.io; a skip locally when it is missing, a failure in CI (it is in the test extra)."""
    if os.environ.get("CI"):
        import skops.io

        return skops.io
    return pytest.importorskip("skops.io")


def train_model(path: Path, **vectorizer: Any) -> Any:
    """A TfidfVectorizer + LogisticRegression predicting thumbs-up from text, saved with skops."""
    sio = skops_io()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(**vectorizer), LogisticRegression())
    model.fit(POSITIVE * 5 + NEGATIVE * 5, [1] * 20 + [0] * 20)
    sio.dump(model, path)
    return model


def all_kinds_config(path: Path, model_path: Path, **extra: Any) -> Path:
    config = {
        "proxies": [
            {"name": "answer_words", "compute": {"kind": "length", "field": "output", "unit": "words"}},
            {"name": "answer_chars", "compute": {"kind": "length", "unit": "chars"}},
            {"name": "handle_seconds", "direction": "lower",
             "compute": {"kind": "duration", "start": "opened_at", "end": "closed_at"}},
            {"name": "apology", "direction": "lower",
             "compute": {"kind": "match", "keywords": ["sorry", "I apologize"]}},
            {"name": "runaway", "compute": {"kind": "match", "regex": "^(a|aa)+$", "timeout_seconds": 0.02}},
            {"name": "valid_json", "compute": {"kind": "json_valid", "field": "structured",
                                               "schema": {"type": "object", "required": ["intent"]}}},
            {"name": "predicted_thumbs", "compute": {"kind": "model", "path": str(model_path), "field": "output",
                                                     "version": "thumbs-2026-01"}},
        ],
        "audits": [{"name": "resolved", "field": "audit.resolved"}],
        **extra,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


Expected = tuple[list[dict[str, Any]], dict[str, float], dict[tuple[str, str], int]]


def all_kinds_records(model: Any, n: int = 60) -> Expected:
    """Records (outputs, a late label for each, and a few broken ones), the expected mean of each
    proxy over the outputs, and the expected failure counts by (proxy, reason)."""
    texts = [*POSITIVE, *NEGATIVE, "Sorry, I apologize for the delay", "I am SORRY"]
    records: list[dict[str, Any]] = []
    values: dict[str, list[float]] = {k: [] for k in ("answer_words", "answer_chars", "handle_seconds", "apology",
                                                      "runaway", "valid_json", "predicted_thumbs")}
    for i in range(n):
        text = texts[i % len(texts)]
        opened = T0 + i
        closed = opened + 30 + i
        structured = '{"intent": "refund"}' if i % 3 == 0 else ('{"other": 1}' if i % 3 == 1 else "not json {")
        records.append({"id": f"c{i}", "ts": T0 + i, "output": text, "structured": structured,
                        "opened_at": opened if i % 2 else datetime.fromtimestamp(opened, UTC).isoformat(),
                        "closed_at": closed})
        values["answer_words"].append(len(text.split()))
        values["answer_chars"].append(len(text))
        values["handle_seconds"].append(closed - opened)
        values["apology"].append(1.0 if "sorry" in text.lower() or "apologize" in text.lower() else 0.0)
        values["runaway"].append(0.0)
        values["valid_json"].append(1.0 if i % 3 == 0 else 0.0)
        values["predicted_thumbs"].append(float(model.predict_proba([text])[0][1]))
    for i in range(n):  # late labels: no output, no timestamps to compute from, and no failures for it
        records.append({"id": f"c{i}", "ts": T0 + n + i, "audit": {"resolved": 1 if texts[i % len(texts)] in POSITIVE
                                                                   else 0}})
    # broken on purpose: each loses some computed proxies, keeps the others, never stops the stream
    records.append({"id": "b1", "ts": T0 + 3 * n, "output": 42, "structured": "{}",
                    "opened_at": T0, "closed_at": T0 - 5})                       # not_text x4, negative_duration
    records.append({"id": "b2", "ts": T0 + 3 * n + 1, "output": "a" * 60 + "b", "structured": "[]",
                    "opened_at": "yesterday", "closed_at": T0})                  # regex_timeout, bad_timestamp
    records.append({"id": "b3", "ts": T0 + 3 * n + 2, "opened_at": T0, "closed_at": T0 + 1})  # missing_field x6
    failures = {("answer_words", "not_text"): 1, ("answer_chars", "not_text"): 1, ("apology", "not_text"): 1,
                ("runaway", "not_text"): 1, ("predicted_thumbs", "not_text"): 1,
                ("handle_seconds", "negative_duration"): 1,
                ("runaway", "regex_timeout"): 1, ("handle_seconds", "bad_timestamp"): 1,
                ("answer_words", "missing_field"): 1, ("answer_chars", "missing_field"): 1,
                ("apology", "missing_field"): 1, ("runaway", "missing_field"): 1,
                ("valid_json", "missing_field"): 1, ("predicted_thumbs", "missing_field"): 1}
    b2 = "a" * 60 + "b"
    for name, value in (("answer_words", 1), ("answer_chars", 61), ("apology", 0.0),
                        ("predicted_thumbs", float(model.predict_proba([b2])[0][1]))):
        values[name].append(value)
    values["valid_json"] += [0.0, 0.0]  # b1: {} lacks "intent"; b2: [] is not an object
    values["handle_seconds"].append(1.0)  # b3
    means = {name: sum(v) / len(v) for name, v in values.items()}
    return records, means, failures


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
