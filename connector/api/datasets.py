"""Uploaded training datasets: validated with the model lifecycle's loader, stored as files + ``datasets`` rows.

An upload is parsed and validated by :func:`connector.model.data.load_labeled_bytes`
(errors name the line and the column), then stored in a canonical form: a JSON
Lines file under ``<state_dir>/datasets/`` with one object per example,
``{"text": ..., "<field>": label, ...}`` (text already cleaned, duplicates
dropped), written to a temporary file and renamed.  Training reads it back
with :func:`load_dataset`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from connector.config import AppConfig
from connector.model.data import DEFAULT_LABEL_COLUMNS, FileFormat, LabeledData, load_labeled_bytes, load_labeled_file
from connector.store.db import Store, utcnow
from connector.store.tables import Dataset

#: conveniences for files written for other tools: ``ticket_data`` as the text column, ``label`` as the queue
TEXT_ALIASES = ("ticket_data",)
QUEUE_LABEL_ALIASES = ("label",)


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """How to read an upload: its format and (optionally) which columns hold text and labels."""

    format: FileFormat
    filename: str = "upload"
    text_column: str | None = None
    subject_column: str | None = None
    body_column: str | None = None
    label_columns: Mapping[str, str] | None = None


def _csv_header(content: bytes) -> list[str]:
    first = content[:65536].split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    try:
        return next(csv.reader(io.StringIO(first)), [])
    except csv.Error:
        return []


def _with_aliases(content: bytes, spec: UploadSpec) -> UploadSpec:
    """Fill in ``ticket_data``/``label`` columns of a CSV when nothing was named.

    ``label`` feeds the queue whenever the CSV has no ``queue`` column, with or without ``priority``
    (the ATC guide's ``text,label,priority``)."""
    if spec.format != "csv" or spec.text_column or spec.subject_column or spec.body_column or spec.label_columns:
        return spec
    header = [h.strip() for h in _csv_header(content)]
    text_column = None
    if not {"text", "subject", "body"} & set(header):
        text_column = next((a for a in TEXT_ALIASES if a in header), None)
    label_columns = None
    alias = next((a for a in QUEUE_LABEL_ALIASES if a in header), None)
    if alias and "queue" not in header:
        # the alias feeds the queue; the other default label columns present keep their own fields
        label_columns = {"queue": alias, **{c: c for c in DEFAULT_LABEL_COLUMNS if c != "queue" and c in header}}
    return UploadSpec(spec.format, spec.filename, text_column, None, None, label_columns)


def parse_upload(content: bytes, spec: UploadSpec, *, min_examples_per_class: int) -> LabeledData:
    """Load and validate an uploaded body (raises DataError naming line and column)."""
    spec = _with_aliases(content, spec)
    return load_labeled_bytes(
        content,
        filename=spec.filename,
        format=spec.format,
        text_column=spec.text_column,
        subject_column=spec.subject_column,
        body_column=spec.body_column,
        label_columns=dict(spec.label_columns) if spec.label_columns else None,
        min_examples_per_class=min_examples_per_class,
    )


def datasets_dir(config: AppConfig) -> Path:
    return config.state_dir / "datasets"


def _write_jsonl(data: LabeledData, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".jsonl", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for i, text in enumerate(data.texts):
                row: dict[str, str | None] = {"text": text}
                for name, values in data.labels.items():
                    row[name] = values[i]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_dataset(config: AppConfig, store: Store, data: LabeledData, *, name: str) -> Dataset:
    """Write the canonical file and add its ``datasets`` row; returns the row."""
    fingerprint = data.fingerprint()
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    path = datasets_dir(config) / f"{stamp}-{fingerprint[:12]}.jsonl"
    _write_jsonl(data, path)
    try:
        with store.session() as session:
            row = Dataset(
                name=name[:200],
                path=str(path.resolve()),
                created_at=utcnow(),
                rows=len(data),
                label_counts=data.all_label_counts(),
                fingerprint=fingerprint,
            )
            session.add(row)
            session.flush()
            session.expunge(row)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return row


def get_dataset(store: Store, dataset_id: int | None) -> Dataset | None:
    """The dataset with this id, or the latest one when ``dataset_id`` is None."""
    with store.session() as session:
        if dataset_id is None:
            row = session.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(1)).first()
        else:
            row = session.get(Dataset, dataset_id)
        if row is not None:
            session.expunge(row)
        return row


def load_dataset(path: str | os.PathLike[str], fields: list[str], *, min_examples_per_class: int) -> LabeledData:
    """Read a stored dataset back for training ``fields``."""
    return load_labeled_file(
        path, format="jsonl", label_columns=list(fields), min_examples_per_class=min_examples_per_class
    )
