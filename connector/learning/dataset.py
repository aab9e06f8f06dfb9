"""The training and evaluation sets of a retraining, from the stored examples.

* **Evaluation set**: the examples flagged ``is_eval`` at export (a stable hash
  of system + ticket id): recent resolved tickets, fixed, never trained on.
* **Training set**: every other example (corrected tickets repeated
  ``correction_weight`` times), plus the optional base dataset file; labels
  with too few examples for a field are left out of that field (logged).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connector.config import AppConfig
from connector.model.data import LabeledData, load_labeled_file
from connector.store.db import Store
from connector.store.tables import TrainingExample

log = logging.getLogger(__name__)


class NotEnoughData(Exception):
    """There is nothing (or too little) to train on or to evaluate with."""


@dataclass
class TrainingSets:
    train: LabeledData
    eval: LabeledData
    #: fields that can be trained (two or more classes with enough examples)
    fields: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def _records(rows: list[tuple[str, dict[str, Any], str]], fields: list[str], weight: int) -> tuple[list[str], dict[str, list[str | None]]]:
    texts: list[str] = []
    labels: dict[str, list[str | None]] = {f: [] for f in fields}
    for text, row_labels, source in rows:
        repeat = weight if source == "correction" else 1
        for _ in range(repeat):
            texts.append(text)
            for f in fields:
                value = row_labels.get(f)
                labels[f].append(None if value in (None, "") else str(value))
    return texts, labels


def _drop_rare(labels: dict[str, list[str | None]], minimum: int) -> dict[str, list[str]]:
    dropped: dict[str, list[str]] = {}
    for name, values in labels.items():
        counts = Counter(v for v in values if v is not None)
        rare = {label for label, n in counts.items() if n < minimum}
        if rare:
            dropped[name] = sorted(rare)
            labels[name] = [None if v in rare else v for v in values]
    return dropped


def load_base_dataset(config: AppConfig, path: Path) -> LabeledData:
    learning = config.learning
    return load_labeled_file(
        path,
        text_column=learning.base_dataset_text_column,
        label_columns=learning.base_dataset_label_columns or None,
        validate=False,
        skip_invalid=True,
    )


def build_training_sets(config: AppConfig, store: Store, *, base_dataset: Path | None = None) -> TrainingSets:
    """Read the stored examples (and the base dataset) into training and evaluation sets."""
    fields = list(config.model.fields)
    learning = config.learning
    with store.session() as session:
        rows = session.execute(
            select(TrainingExample.text, TrainingExample.labels, TrainingExample.source, TrainingExample.is_eval)
        ).all()
    train_rows = [(t, dict(lbl or {}), s) for t, lbl, s, e in rows if not e]
    eval_rows = [(t, dict(lbl or {}), s) for t, lbl, s, e in rows if e]

    texts, labels = _records(train_rows, fields, learning.correction_weight)
    base_path = base_dataset or learning.base_dataset
    base_examples = 0
    if base_path is not None:
        base = load_base_dataset(config, Path(base_path))
        base_examples = len(base)
        texts.extend(base.texts)
        for f in fields:
            labels[f].extend(base.labels.get(f, [None] * len(base)))
    dropped = _drop_rare(labels, config.training.min_examples_per_class)
    train = LabeledData(texts=texts, labels=labels, source="training_examples" + (f"+{base_path}" if base_path else ""))

    eval_texts, eval_labels = _records(eval_rows, fields, 1)
    evaluation = LabeledData(texts=eval_texts, labels=eval_labels, source="training_examples (held apart)")

    trainable = [f for f in fields if len(train.label_counts(f)) >= 2]
    info = {
        "stored_examples": len(train_rows),
        "corrected_examples": sum(1 for *_, s in train_rows if s == "correction"),
        "base_examples": base_examples,
        "train_examples": len(train),
        "eval_examples": len(evaluation),
        "label_counts": train.all_label_counts(),
        "eval_label_counts": evaluation.all_label_counts(),
        "rare_labels_left_out": dropped,
        "fields": trainable,
        "data_fingerprint": train.fingerprint(),
    }
    if dropped:
        log.info("labels with fewer than %d examples left out of training: %s", config.training.min_examples_per_class, dropped)
    return TrainingSets(train=train, eval=evaluation, fields=trainable, info=info)


def eval_count_per_field(sets: TrainingSets) -> dict[str, int]:
    return {f: sum(1 for v in sets.eval.labels[f] if v is not None) for f in sets.eval.labels}
