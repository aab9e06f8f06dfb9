"""The linear baseline: TF-IDF over word and character n-grams with a linear classifier (scikit-learn).

Trained on the same split as the transformer for every field, so each
transformer result is reported beside a strong simple model.  It needs no
tokenizer or language model, so it also serves as the language-agnostic CPU
fallback: :class:`LinearClassifier` implements the classifier interface.
Saved as ``linear.joblib`` + ``helpdesk_connector.json`` (``kind: linear``) in
a versioned directory when an ``output_dir`` is given; only load such files
from your own model directory (joblib files are pickles).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from connector.model.artifacts import TrainedModel, new_version, save_atomically
from connector.model.classifier import META_FILE, FieldPrediction, LabelScore, ModelLoadError, PerFieldClassifier
from connector.model.data import DataError, LabeledData
from connector.model.evaluate import FieldEvaluation, evaluate_model

LINEAR_FILE = "linear.joblib"


class LinearModel:
    """TF-IDF (word 1–2-grams + char 2–5-grams within word boundaries) → logistic regression."""

    def __init__(self, *, c: float = 20.0, class_weight: str | None = "balanced", max_features: int = 300_000) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        features = FeatureUnion(
            [
                ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=max_features, lowercase=True)),
                (
                    "char",
                    TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=max_features, lowercase=True),
                ),
            ]
        )
        self.pipeline = make_pipeline(features, LogisticRegression(C=c, max_iter=2000, class_weight=class_weight))
        self.labels: list[str] = []

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> LinearModel:
        if len(set(labels)) < 2:
            raise DataError("a single class: a classifier needs at least two")
        self.pipeline.fit(list(texts), list(labels))
        self.labels = [str(x) for x in self.pipeline.classes_]
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline.predict_proba(list(texts))

    def predict(self, texts: Sequence[str], *, top_k: int = 3) -> list[FieldPrediction]:
        if not texts:
            return []
        probs = self.predict_proba(texts)
        k = min(top_k, len(self.labels))
        top = np.argsort(-probs, axis=1)[:, :k]
        out = []
        for row, idx in zip(probs, top):
            scores = tuple(LabelScore(self.labels[i], float(row[i])) for i in idx)
            out.append(FieldPrediction(scores[0].label, scores[0].confidence, scores))
        return out


@dataclass(slots=True)
class BaselineResult:
    field: str
    model: LinearModel
    evaluation: FieldEvaluation
    train_seconds: float
    #: the saved model directory (when ``output_dir`` was given)
    trained: TrainedModel | None = None


def train_baseline(
    train: LabeledData,
    field: str,
    *,
    validation: LabeledData,
    target_precision: float = 0.9,
    output_dir: str | os.PathLike[str] | None = None,
    version: str | None = None,
) -> BaselineResult:
    """Fit the linear model on ``train``'s ``field`` and evaluate it on ``validation``."""
    texts, labels = train.for_field(field)
    started = time.perf_counter()
    model = LinearModel().fit(texts, labels)
    seconds = time.perf_counter() - started
    vtexts, vlabels = validation.for_field(field)
    if not vtexts:
        raise DataError(f"no validation examples for field {field!r}")
    evaluation = evaluate_model(model, field, vtexts, vlabels, target_precision=target_precision, model_version="linear")
    evaluation.extra["train_seconds"] = round(seconds, 2)
    result = BaselineResult(field, model, evaluation, seconds)
    if output_dir is not None:
        result.trained = save_linear(model, field, Path(output_dir), evaluation, train, version=version)
    return result


def save_linear(
    model: LinearModel,
    field: str,
    output_dir: Path,
    evaluation: FieldEvaluation,
    data: LabeledData,
    *,
    version: str | None = None,
) -> TrainedModel:
    """Save to ``<output_dir>/<field>/<version>-linear`` (temporary directory, then rename)."""
    import joblib

    created = datetime.now(UTC)
    trained = TrainedModel(
        field=field,
        version=f"{version or new_version(created)}-linear",
        path=output_dir / field / f"{version or new_version(created)}-linear",
        labels=list(model.labels),
        base_model="tfidf-logreg",
        data_fingerprint=data.fingerprint(),
        created_at=created,
        metrics=evaluation.as_dict(),
        training={},
        kind="linear",
    )
    save_atomically(trained, lambda tmp: joblib.dump(model, tmp / LINEAR_FILE))
    return trained


def load_linear(model_dir: str | os.PathLike[str]) -> LinearModel:
    """Load a linear model directory written by :func:`save_linear` (trusted directories only)."""
    import joblib

    path = Path(model_dir)
    file = path / LINEAR_FILE
    if not file.is_file():
        raise ModelLoadError(f"{path} holds no linear model ({LINEAR_FILE})")
    try:
        model = joblib.load(file)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise ModelLoadError(f"cannot load {file}: {exc}") from exc
    if not isinstance(model, LinearModel):
        raise ModelLoadError(f"{file} is not a linear model")
    return model


class LinearClassifier(PerFieldClassifier[LinearModel]):
    """The classifier interface over one linear model per field (the CPU fallback)."""

    def __init__(self, models: Mapping[str, LinearModel], *, version: str = "linear", top_k: int = 3) -> None:
        super().__init__(models, top_k=top_k)
        self._version = version

    @classmethod
    def from_dirs(cls, dirs: Mapping[str, str | os.PathLike[str]], *, top_k: int = 3) -> LinearClassifier:
        models = {f: load_linear(p) for f, p in dirs.items()}
        versions = []
        for f, p in dirs.items():
            meta_file = Path(p) / META_FILE
            meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
            versions.append(f"{f}={meta.get('version', Path(p).name)}")
        return cls(models, version=",".join(versions), top_k=top_k)

    @property
    def version(self) -> str:
        return self._version

    def predict_field(self, model: LinearModel, texts: Sequence[str]) -> list[FieldPrediction]:
        return model.predict(texts, top_k=self.top_k)
