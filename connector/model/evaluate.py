"""Evaluation of a classifier field: metrics, confusion matrix, coverage versus accuracy, reports.

``evaluate_predictions`` turns true labels, predicted labels and confidences
into a :class:`FieldEvaluation` (accuracy, macro-F1, per-class precision /
recall / F1, confusion matrix, and for each confidence threshold the share of
tickets at or above it — the coverage — with the accuracy on that share).  The
recommended threshold of a field is the lowest one whose accuracy on the
covered tickets reaches the target precision (default 0.9): the setting that
writes back the most tickets while staying that precise.

``write_report`` writes ``report.json``, ``report.md`` and per field a PNG
of the confusion matrix and of the coverage curve (matplotlib, Agg backend).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.model.settings import CpuPrecision

#: thresholds at which coverage and accuracy are reported
THRESHOLDS: tuple[float, ...] = tuple(round(t / 100, 2) for t in range(0, 100, 5)) + (0.96, 0.97, 0.98, 0.99)


@dataclass(slots=True)
class ThresholdPoint:
    threshold: float
    coverage: float
    accuracy: float | None
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "coverage": round(self.coverage, 4),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "count": self.count,
        }


@dataclass(slots=True)
class FieldEvaluation:
    """Metrics of one field on one labelled set."""

    field: str
    labels: list[str]
    examples: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    thresholds: list[ThresholdPoint]
    target_precision: float
    #: lowest threshold reaching ``target_precision`` on the covered tickets (None: never reached)
    recommended_threshold: float | None
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def recommended_coverage(self) -> float | None:
        for point in self.thresholds:
            if point.threshold == self.recommended_threshold:
                return point.coverage
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "model_version": self.model_version,
            "examples": self.examples,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "weighted_f1": round(self.weighted_f1, 4),
            "labels": self.labels,
            "per_class": {
                k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in d.items()}
                for k, d in self.per_class.items()
            },
            "confusion_matrix": self.confusion,
            "target_precision": self.target_precision,
            "recommended_threshold": self.recommended_threshold,
            "recommended_coverage": None if self.recommended_coverage is None else round(self.recommended_coverage, 4),
            "coverage_curve": [p.as_dict() for p in self.thresholds],
            **self.extra,
        }

    def summary(self) -> dict[str, Any]:
        """The headline figures (for tables and the model registry)."""
        return {
            "examples": self.examples,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "recommended_threshold": self.recommended_threshold,
            "recommended_coverage": None if self.recommended_coverage is None else round(self.recommended_coverage, 4),
        }


def evaluate_predictions(
    field_name: str,
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidences: Sequence[float] | None = None,
    *,
    labels: Sequence[str] | None = None,
    target_precision: float = 0.9,
    model_version: str | None = None,
) -> FieldEvaluation:
    """Metrics of predictions against the truth.  ``labels`` orders the matrix (default: all seen, sorted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    if not y_true:
        raise ValueError(f"no examples to evaluate field {field_name!r}")
    label_list = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
    extra = [x for x in sorted(set(y_true) | set(y_pred)) if x not in label_list]
    label_list += extra
    true_labels = sorted(set(y_true))
    accuracy = float(accuracy_score(y_true, y_pred))
    # macro over the classes present in the truth: a class the model knows but the set lacks does not count
    macro = float(f1_score(y_true, y_pred, labels=true_labels, average="macro", zero_division=0))
    weighted = float(f1_score(y_true, y_pred, labels=true_labels, average="weighted", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=label_list, zero_division=0)
    per_class = {
        label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, label in enumerate(label_list)
    }
    cm = confusion_matrix(y_true, y_pred, labels=label_list).tolist()
    points = coverage_curve(y_true, y_pred, confidences) if confidences is not None else []
    return FieldEvaluation(
        field=field_name,
        labels=label_list,
        examples=len(y_true),
        accuracy=accuracy,
        macro_f1=macro,
        weighted_f1=weighted,
        per_class=per_class,
        confusion=cm,
        thresholds=points,
        target_precision=target_precision,
        recommended_threshold=recommend_threshold(points, target_precision),
        model_version=model_version,
    )


def coverage_curve(
    y_true: Sequence[str], y_pred: Sequence[str], confidences: Sequence[float], thresholds: Sequence[float] = THRESHOLDS
) -> list[ThresholdPoint]:
    n = len(y_true)
    correct = [t == p for t, p in zip(y_true, y_pred)]
    out = []
    for t in thresholds:
        covered = [c for c, conf in zip(correct, confidences) if conf >= t]
        out.append(
            ThresholdPoint(
                threshold=t,
                coverage=len(covered) / n if n else 0.0,
                accuracy=(sum(covered) / len(covered)) if covered else None,
                count=len(covered),
            )
        )
    return out


def recommend_threshold(points: Sequence[ThresholdPoint], target_precision: float) -> float | None:
    """The lowest threshold whose covered tickets are at least ``target_precision`` accurate."""
    for point in sorted(points, key=lambda p: p.threshold):
        if point.accuracy is not None and point.count > 0 and point.accuracy >= target_precision:
            return point.threshold
    return None


def evaluate_model_dir(
    model_dir: str | os.PathLike[str],
    data: Any,
    *,
    field: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    max_length: int = 256,
    cpu_precision: CpuPrecision = "auto",
    target_precision: float = 0.9,
) -> FieldEvaluation:
    """Load a model directory (``FieldModel``) and evaluate it on ``data`` (a ``LabeledData``).

    The field defaults to the ``field`` in the model's metadata, else the data's only field.
    Raises :class:`~connector.model.classifier.ModelLoadError` for a missing or corrupt directory
    and :class:`~connector.model.data.DataError` when the data lacks the field.
    """
    from connector.model.classifier import FieldModel, read_model_meta, resolve_device
    from connector.model.data import DataError

    path = Path(model_dir)
    meta = read_model_meta(path) if path.is_dir() else {}
    model = FieldModel(path, device=resolve_device(device), max_length=max_length, cpu_precision=cpu_precision)
    name = field or str(meta.get("field") or "")
    if not name:
        if len(data.fields) != 1:
            raise DataError(f"say which field {path} predicts: the data has {', '.join(data.fields)}")
        name = data.fields[0]
    if name not in data.labels:
        if len(data.fields) == 1:
            name_in_data = data.fields[0]
        else:
            raise DataError(f"the data has no labels for field {name!r} (fields: {', '.join(data.fields)})")
    else:
        name_in_data = name
    texts, truth = data.for_field(name_in_data)
    return evaluate_model(
        model, name, texts, truth, target_precision=target_precision, model_version=model.version, batch_size=batch_size
    )


def evaluate_model(
    model: Any,
    field_name: str,
    texts: Sequence[str],
    truth: Sequence[str],
    *,
    target_precision: float = 0.9,
    model_version: str | None = None,
    **predict_options: Any,
) -> FieldEvaluation:
    """Let ``model`` (a transformer ``FieldModel`` or a ``LinearModel``) label ``texts`` and score it against ``truth``.

    ``predict_options`` go to its ``predict`` (e.g. ``batch_size``); its ``labels`` order the confusion matrix.
    """
    preds = model.predict(texts, top_k=1, **predict_options)
    return evaluate_predictions(
        field_name,
        truth,
        [p.label for p in preds],
        [p.confidence for p in preds],
        labels=model.labels,
        target_precision=target_precision,
        model_version=model_version,
    )


# --------------------------------------------------------------------------- reports


@dataclass(slots=True)
class EvaluationReport:
    """Evaluations of several fields (and optionally of the linear baseline beside them)."""

    fields: dict[str, FieldEvaluation]
    baselines: dict[str, FieldEvaluation] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fields": {k: v.as_dict() for k, v in self.fields.items()}}
        if self.baselines:
            out["baselines"] = {k: v.as_dict() for k, v in self.baselines.items()}
        if self.data:
            out["data"] = self.data
        return out


def _plot_confusion(ev: FieldEvaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ev.labels)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(ev.confusion, cmap="Blues")
    ax.set_xticks(range(n), ev.labels, rotation=45, ha="right")
    ax.set_yticks(range(n), ev.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{ev.field}: confusion matrix")
    top = max((max(row) for row in ev.confusion), default=0)
    for i, row in enumerate(ev.confusion):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_coverage(ev: FieldEvaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in ev.thresholds if p.accuracy is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p.threshold for p in pts], [p.coverage for p in pts], label="coverage", marker=".")
    ax.plot([p.threshold for p in pts], [p.accuracy for p in pts], label="accuracy of covered", marker=".")
    ax.axhline(ev.target_precision, color="grey", linestyle=":", label=f"target {ev.target_precision}")
    if ev.recommended_threshold is not None:
        ax.axvline(ev.recommended_threshold, color="red", linestyle="--", label=f"recommended {ev.recommended_threshold}")
    ax.set_xlabel("confidence threshold")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{ev.field}: coverage vs accuracy")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _md_field(ev: FieldEvaluation, prefix: str) -> list[str]:
    lines = [
        f"## {ev.field}" + (f" (model {ev.model_version})" if ev.model_version else ""),
        "",
        f"- examples: {ev.examples}",
        f"- accuracy: {ev.accuracy:.4f}",
        f"- macro-F1: {ev.macro_f1:.4f}",
        f"- recommended threshold for precision {ev.target_precision}: "
        + (
            f"{ev.recommended_threshold} (covers {ev.recommended_coverage:.1%} of tickets)"
            if ev.recommended_threshold is not None and ev.recommended_coverage is not None
            else "none reaches it"
        ),
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m in ev.per_class.items():
        lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {int(m['support'])} |")
    lines += ["", f"![confusion matrix]({prefix}_confusion.png)", f"![coverage]({prefix}_coverage.png)", ""]
    lines += ["| threshold | coverage | accuracy of covered |", "|---:|---:|---:|"]
    for p in ev.thresholds:
        if p.threshold in (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99) or p.threshold == ev.recommended_threshold:
            acc = "–" if p.accuracy is None else f"{p.accuracy:.3f}"
            lines.append(f"| {p.threshold:.2f} | {p.coverage:.3f} | {acc} |")
    lines.append("")
    return lines


def write_report(report: EvaluationReport, out_dir: str | os.PathLike[str], *, title: str = "Evaluation") -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNGs into ``out_dir``; returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    paths["json"] = json_path
    md = [f"# {title}", ""]
    if report.data:
        md += [f"- data: {report.data.get('source', '')} ({report.data.get('examples', '?')} examples)", ""]
    if report.baselines:
        md += ["| field | model macro-F1 | linear baseline macro-F1 | model accuracy | baseline accuracy |", "|---|---:|---:|---:|---:|"]
        for name, ev in report.fields.items():
            base = report.baselines.get(name)
            md.append(
                f"| {name} | {ev.macro_f1:.4f} | {base.macro_f1:.4f} | {ev.accuracy:.4f} | {base.accuracy:.4f} |"
                if base
                else f"| {name} | {ev.macro_f1:.4f} | – | {ev.accuracy:.4f} | – |"
            )
        md.append("")
    for name, ev in report.fields.items():
        prefix = _safe(name)
        _plot_confusion(ev, out / f"{prefix}_confusion.png")
        _plot_coverage(ev, out / f"{prefix}_coverage.png")
        paths[f"{name}_confusion"] = out / f"{prefix}_confusion.png"
        paths[f"{name}_coverage"] = out / f"{prefix}_coverage.png"
        md += _md_field(ev, prefix)
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    paths["markdown"] = md_path
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "field"


def evaluation_from_dict(d: Mapping[str, Any]) -> FieldEvaluation:
    """Rebuild a FieldEvaluation from :meth:`FieldEvaluation.as_dict` output."""
    return FieldEvaluation(
        field=d["field"],
        labels=list(d["labels"]),
        examples=int(d["examples"]),
        accuracy=float(d["accuracy"]),
        macro_f1=float(d["macro_f1"]),
        weighted_f1=float(d.get("weighted_f1", 0.0)),
        per_class=dict(d.get("per_class", {})),
        confusion=list(d.get("confusion_matrix", [])),
        thresholds=[ThresholdPoint(p["threshold"], p["coverage"], p["accuracy"], p["count"]) for p in d.get("coverage_curve", [])],
        target_precision=float(d.get("target_precision", 0.9)),
        recommended_threshold=d.get("recommended_threshold"),
        model_version=d.get("model_version"),
    )
