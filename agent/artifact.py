"""The reference as an artifact: every fitted reference of a store in one reviewed JSON file.

``goodhart-agent reference export`` writes one; ``detection.reference_file`` (at start) or
``goodhart-agent reference import`` (into a stopped agent's store) makes the pairs in it start from
it instead of warming up. A pair's entry carries its detector's *pinned reference*
(:mod:`agent.detect.pinning`: the fitted line, CUSUM reference values, thresholds, allowances), so a
fresh agent detects exactly as the one that fitted it did from its fit on; plus what a reviewer
reads: fit statistics in the proxy's own units, the time span of the audited outputs it was fitted
on, and where it came from. The file also carries the detection settings and a hash of each config
part that shapes a reference (proxies, audits, segments, detection): an artifact fitted under
another config is refused, naming the difference, because its thresholds would no longer keep the
false-alarm budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import Config
from agent.core import PairKey
from agent.detect.factory import detector_factory, detector_settings
from agent.detect.pinning import fit_summary
from agent.detect.reference import ReferenceRelation
from agent.store import Store

FORMAT = "goodhart-reference/1"
PARTS = ("proxies", "audits", "segments", "detection")


class ArtifactError(ValueError):
    """A reference artifact this agent cannot use; the message reads after the file's name."""


@dataclass(frozen=True)
class Artifact:
    """A checked artifact: its digest (what the store records per imported pair) and pinned references."""

    path: str
    digest: str
    pairs: dict[PairKey, dict[str, Any]]


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_parts(config: Config) -> dict[str, Any]:
    """The config parts a reference depends on. Audits by what they measure (field, or judge model,
    prompt and scale, or grader URL and pointer), not by how they are called (timeouts, budgets,
    prices); detection by the settings its detectors are built with (the per-test false-alarm
    budget folds in the number of pairs)."""
    audits = []
    for audit in config.audits:
        entry: dict[str, Any] = {"name": audit.name, "field": audit.field}
        if audit.llm_judge is not None:
            j = audit.llm_judge
            entry["llm_judge"] = {"model": j.model, "prompt": j.prompt, "system": j.system, "scale": list(j.scale),
                                  "reply_pointer": j.reply_pointer}
        if audit.http_grader is not None:
            entry["http_grader"] = {"url": audit.http_grader.url, "pointer": audit.http_grader.pointer}
        audits.append(entry)
    return {"proxies": [p.model_dump(mode="json") for p in config.proxies], "audits": audits,
            "segments": None if config.segments is None else config.segments.model_dump(mode="json"),
            "detection": detector_settings(config)}


def _utc(ts: float | None) -> str | None:
    return None if ts is None or not math.isfinite(ts) else datetime.fromtimestamp(ts, UTC).isoformat()


def _in_proxy_units(fit: dict[str, Any], direction: float) -> dict[str, Any]:
    """Fit statistics as the config reads the proxy (a ``direction: lower`` proxy is negated inside)."""
    if direction > 0:
        return fit
    out = dict(fit, proxy_mean=-fit["proxy_mean"], slope=-fit["slope"], proxy_min=-fit["proxy_max"],
               proxy_max=-fit["proxy_min"])
    out["rank_corr"] = None if fit["rank_corr"] is None else -fit["rank_corr"]
    return out


def export_references(config: Config, store: Store, now: float) -> dict[str, Any]:
    """The artifact of every fitted reference in the store (pairs saved under other settings are
    left out: they would start afresh; pairs still warming up are listed by key)."""
    if config.detection.detector != "decoupling":
        raise ArtifactError(f"detection.detector: {config.detection.detector} keeps no reference to export")
    make, settings = detector_factory(config), detector_settings(config)
    directions = {p.name: -1.0 if p.direction == "lower" else 1.0 for p in config.proxies}
    pairs: list[dict[str, Any]] = []
    warming: list[list[str]] = []
    for key_text, state in sorted(store.load_detectors().items()):
        proxy, audit, segment = json.loads(key_text)
        if state.get("settings") != settings or proxy not in directions:
            continue
        detector = make()
        detector.load_state(state["detector"])
        pinned, info = detector.pinned_reference(), detector.reference_info()
        if pinned is None or info is None:
            warming.append([proxy, audit, segment])
            continue
        fit = _in_proxy_units(fit_summary(ReferenceRelation.from_dict(pinned["reference"])), directions[proxy])
        pairs.append({"proxy": proxy, "audit": audit, "segment": segment, "origin": info.origin,
                      "fitted_from": info.first_ts, "fitted_to": info.last_ts,
                      "fitted_from_utc": _utc(info.first_ts), "fitted_to_utc": _utc(info.last_ts),
                      "fit": fit, "detector": pinned})
    parts = config_parts(config)
    return {"format": FORMAT, "agent_version": __version__, "exported_at": now, "exported_at_utc": _utc(now),
            "settings": settings, "config_hash": _digest(parts),
            "config_parts": {name: _digest(parts[name]) for name in PARTS},
            "pairs": pairs, "warming_up": warming}


def write_artifact(doc: dict[str, Any], out: str | Path) -> None:
    """Atomically: a reader (a ConfigMap sync, the agent) never sees half a file."""
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=".reference-", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ArtifactError(f"cannot be read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ArtifactError("is not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"is not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ArtifactError(f"is not a reference artifact (format {found!r}, expected {FORMAT!r})")
    return doc


def _check_config(doc: dict[str, Any], config: Config) -> None:
    """The first difference between the artifact's settings and config parts and ours, as an error."""
    ours, theirs = detector_settings(config), doc.get("settings")
    if not isinstance(theirs, dict):
        raise ArtifactError("has no detection settings")
    for name in sorted(set(ours) | set(theirs)):
        if theirs.get(name) != ours.get(name):
            note = " (from detection.audits_between_false_alarms and the number of pairs)" if name == "arl0" else ""
            raise ArtifactError(f"was fitted with {name}={theirs.get(name)!r}, "
                                f"this config has {ours.get(name)!r}{note}")
    parts = config_parts(config)
    recorded = doc.get("config_parts")
    if not isinstance(recorded, dict):
        raise ArtifactError("has no config hashes")
    for name in PARTS:
        if recorded.get(name) != _digest(parts[name]):
            raise ArtifactError(f"was fitted with other {name} than this config has (its {name} hash "
                                f"{recorded.get(name)}, this config's {_digest(parts[name])})")


def load_artifact(path: str | Path, config: Config) -> Artifact:
    """Read and check an artifact against this config; every pinned reference is loaded once into a
    throwaway detector, so a broken one fails here, at start, and not at the first audited output."""
    doc = _read(path)
    _check_config(doc, config)
    entries = doc.get("pairs")
    if not isinstance(entries, list):
        raise ArtifactError("has no list of pairs")
    make = detector_factory(config)
    proxies, audits = {p.name for p in config.proxies}, {a.name for a in config.audits}
    pairs: dict[PairKey, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        fields = [entry.get(k) for k in ("proxy", "audit", "segment")] if isinstance(entry, dict) else []
        if len(fields) != 3 or not all(isinstance(k, str) for k in fields) or fields[0] not in proxies \
                or fields[1] not in audits:
            raise ArtifactError(f"pairs[{i}]: not a pair of this config's proxies and audits: {fields!r}")
        key: PairKey = (str(fields[0]), str(fields[1]), str(fields[2]))
        pinned = entry.get("detector")
        try:
            if not isinstance(pinned, dict):
                raise ValueError("no pinned reference (detector)")
            make().load_reference(pinned)
        except ValueError as err:
            raise ArtifactError(f"pairs[{i}] ({'/'.join(key)}): {err}") from None
        pairs[key] = pinned
    return Artifact(str(path), _digest(doc), pairs)
