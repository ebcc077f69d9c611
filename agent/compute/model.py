"""``model``: a scikit-learn pipeline the user trained (text → predicted thumbs-up, say), applied
to a text field of every record.

Models are loaded with skops (``skops.io``), never pickle: a skops file is data, and loading it
runs no code except for the types the file names. Types that skops does not trust by default must
be listed under ``trusted:``; anything else untrusted is a config error, as is a file that is not
a skops file, a model that cannot score a text, or a ``positive_class`` it does not know. All of
that happens when the computers are built (``agent.compute.build_computers``, called by
``check-config`` and at every start), so a bad model is rejected with its key path
(``proxies.N.compute.path: ...``) instead of failing on the first record.

The output is the probability of ``positive_class`` (default: the last of ``classes_``, the
positive class of a 0/1 classifier) for classifiers, ``predict`` for regressors. The model's
version (from the config, else the first 12 hex digits of the file's SHA-256) is exported in
``goodhart_proxy_model_info{proxy,version,sha256}``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.compute.base import BuildError, ComputeFailure, Computer, text_at
from agent.config import ModelCompute

SMOKE_TEXT = "hello"  # scored once at load: a model that cannot score a text is a config error


@dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    method: str                 # "predict_proba" or "predict"
    column: int | None          # predict_proba's column of the positive class
    sha256: str
    version: str

    def score(self, text: str) -> float:
        result = getattr(self.estimator, self.method)([text])
        value = float(result[0][self.column] if self.column is not None else result[0])
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value


def load_model(path: str, trusted: list[str], output: str, positive_class: Any, version: str | None) -> LoadedModel:
    """Load and check a skops file; ValueError with a one-line reason when it is not usable."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    try:
        import skops.io as sio
    except ImportError:
        raise ValueError("the model kind needs skops: pip install 'goodhart-agent[models]'") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as err:  # zip, JSON and schema errors all mean "not a skops file"
        raise ValueError(f"{path} is not a skops file ({_one_line(err)})") from None
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ValueError(f"{path} needs types skops does not trust: {', '.join(refused)};"
                         " list them under trusted only if you trust whoever made the file")
    try:
        estimator = sio.loads(data, trusted=list(untrusted))
    except Exception as err:
        raise ValueError(f"cannot load {path}: {_one_line(err)}") from None
    method, column = _output(estimator, output, positive_class)
    sha256 = hashlib.sha256(data).hexdigest()
    loaded = LoadedModel(estimator, method, column, sha256, version or sha256[:12])
    try:
        loaded.score(SMOKE_TEXT)
    except Exception as err:
        raise ValueError(f"the model in {path} cannot score a text: {_one_line(err)}") from None
    return loaded


def _one_line(err: Exception, limit: int = 300) -> str:
    """An exception as one short line: config problems are printed one per line."""
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _output(estimator: Any, output: str, positive_class: Any) -> tuple[str, int | None]:
    wants_proba = output == "proba" or (output == "auto" and hasattr(estimator, "predict_proba"))
    if not wants_proba:
        if positive_class is not None:
            raise ValueError("positive_class applies only to output proba")
        if not hasattr(estimator, "predict"):
            raise ValueError(f"a {type(estimator).__name__} has no predict method")
        return "predict", None
    if not hasattr(estimator, "predict_proba"):
        raise ValueError(f"a {type(estimator).__name__} has no predict_proba method")
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
    if not classes:
        raise ValueError("the model has no classes_ (is it fitted?)")
    if positive_class is None:
        return "predict_proba", len(classes) - 1
    for i, known in enumerate(classes):
        if known == positive_class or str(known) == str(positive_class):
            return "predict_proba", i
    raise ValueError(f"positive_class {positive_class!r} is not among the model's classes {classes}")


class ModelComputer(Computer):
    reasons = ("missing_field", "not_text", "model_error")

    def __init__(self, field: str, model: LoadedModel) -> None:
        self.field = field
        self.model = model

    def __call__(self, record: dict[str, Any]) -> float:
        text = text_at(record, self.field)
        try:
            return self.model.score(text)
        except Exception as err:  # one record's model error never stops the stream
            raise ComputeFailure("model_error", type(err).__name__) from None

    def info(self) -> dict[str, str]:
        return {"version": self.model.version, "sha256": self.model.sha256}


def build(spec: ModelCompute) -> ModelComputer:
    """Load and smoke-test the model once at start; any problem is a :class:`BuildError` at ``path``."""
    try:
        loaded = load_model(spec.path, spec.trusted, spec.output, spec.positive_class, spec.version)
    except ValueError as err:
        raise BuildError("path", str(err)) from None
    return ModelComputer(spec.field, loaded)
