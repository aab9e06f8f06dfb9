"""Evaluation metrics and reports, and the linear baseline (fast; no transformer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.model.baseline import LinearClassifier, LinearModel, load_linear, train_baseline
from connector.model.classifier import ModelLoadError
from connector.model.data import load_labeled_file, split
from connector.model.evaluate import (
    EvaluationReport,
    coverage_curve,
    evaluate_predictions,
    recommend_threshold,
    write_report,
)
from tests.support.paths import SAMPLE_TICKETS



def test_metrics_of_known_predictions() -> None:
    truth = ["A", "A", "A", "B", "B", "C"]
    pred = ["A", "A", "B", "B", "B", "A"]
    conf = [0.95, 0.9, 0.4, 0.8, 0.7, 0.3]
    ev = evaluate_predictions("queue", truth, pred, conf, labels=["A", "B", "C"], target_precision=0.9)
    assert ev.accuracy == pytest.approx(4 / 6)
    # per class F1: A p=2/3 r=2/3 -> 2/3; B p=2/3 r=1 -> 0.8; C 0
    assert ev.per_class["A"]["f1"] == pytest.approx(2 / 3)
    assert ev.per_class["B"]["f1"] == pytest.approx(0.8)
    assert ev.per_class["C"]["f1"] == 0.0
    assert ev.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert ev.confusion == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    # at 0.5 the covered are the 4 correct ones: accuracy 1.0 -> the lowest threshold reaching 0.9 is above 0.4
    assert ev.recommended_threshold == 0.45
    point = next(p for p in ev.thresholds if p.threshold == 0.45)
    assert point.coverage == pytest.approx(4 / 6) and point.accuracy == 1.0


def test_threshold_never_reached_is_none() -> None:
    points = coverage_curve(["A", "B"], ["B", "A"], [0.99, 0.99])
    assert recommend_threshold(points, 0.9) is None


def test_report_files(tmp_path: Path) -> None:
    ev = evaluate_predictions("queue", ["A", "B", "A"], ["A", "B", "B"], [0.9, 0.8, 0.6])
    base = evaluate_predictions("queue", ["A", "B", "A"], ["A", "A", "B"], [0.9, 0.8, 0.6])
    paths = write_report(EvaluationReport({"queue": ev}, {"queue": base}, {"source": "x.csv", "examples": 3}), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["fields"]["queue"]["macro_f1"] == round(ev.macro_f1, 4)
    assert data["baselines"]["queue"]["accuracy"] == round(1 / 3, 4)
    md = paths["markdown"].read_text()
    assert "queue_confusion.png" in md and "| queue |" in md
    assert paths["queue_coverage"].read_bytes()[:4] == b"\x89PNG"


def test_linear_baseline_learns_the_sample_data(tmp_path: Path) -> None:
    data = load_labeled_file(SAMPLE_TICKETS)
    train, valid = split(data, 0.2, 42)
    result = train_baseline(train, "queue", validation=valid, output_dir=tmp_path, version="v1")
    assert result.evaluation.macro_f1 > 0.85
    assert result.trained.path == tmp_path / "queue" / "v1-linear"
    loaded = LinearClassifier.from_dirs({"queue": result.trained.path})
    pred = loaded.classify(["Der Drucker im 3. Stock zieht kein Papier ein"])[0]
    assert pred.fields["queue"].label == "Hardware"
    assert loaded.version == "queue=v1-linear"
    assert len(pred.fields["queue"].top_k) == 3


def test_linear_model_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        load_linear(tmp_path)
    (tmp_path / "linear.joblib").write_bytes(b"junk")
    with pytest.raises(ModelLoadError):
        load_linear(tmp_path)


def test_linear_model_needs_two_classes() -> None:
    from connector.model.data import DataError

    with pytest.raises(DataError):
        LinearModel().fit(["a", "b"], ["X", "X"])
