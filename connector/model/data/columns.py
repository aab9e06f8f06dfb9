"""Which columns hold a ticket's text and its labels."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.model.data.records import DataError, DataProblem
from connector.text import ticket_text

#: label fields read when no label columns are named
DEFAULT_LABEL_COLUMNS = ("queue", "priority")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """Which columns hold the text and the labels."""

    text_column: str | None = None
    subject_column: str | None = None
    body_column: str | None = None
    #: field name -> column name; empty: the default label columns present in the file
    label_columns: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        text_column: str | None = None,
        subject_column: str | None = None,
        body_column: str | None = None,
        label_columns: Sequence[str] | Mapping[str, str] | None = None,
    ) -> ColumnSpec:
        if text_column and (subject_column or body_column):
            raise DataError("give either a text column or subject/body columns, not both")
        return cls(text_column, subject_column, body_column, parse_label_columns(label_columns))

    def resolve(self, header: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The text column(s) and ``{field: column}`` for a file with this header; DataError if missing."""
        present = {h for h in header}
        problems: list[DataProblem] = []

        def need(col: str) -> None:
            if col not in present:
                problems.append(
                    DataProblem(f"missing column {col!r} (columns: {', '.join(header) or 'none'})", line=1, column=col)
                )

        if self.text_column:
            text_cols = [self.text_column]
        elif self.subject_column or self.body_column:
            text_cols = [c for c in (self.subject_column, self.body_column) if c]
        elif "text" in present:
            text_cols = ["text"]
        elif "subject" in present or "body" in present:
            text_cols = [c for c in ("subject", "body") if c in present]
        else:
            text_cols = ["text"]
        for col in text_cols:
            need(col)
        if self.label_columns:
            labels = dict(self.label_columns)
            for col in labels.values():
                need(col)
        else:
            labels = {c: c for c in DEFAULT_LABEL_COLUMNS if c in present}
            if not labels:
                problems.append(
                    DataProblem(
                        f"no label column: expected {' or '.join(DEFAULT_LABEL_COLUMNS)}, or name one "
                        f"(--label-column); columns: {', '.join(header) or 'none'}",
                        line=1,
                    )
                )
        if problems:
            raise DataError(problems)
        return text_cols, labels

    def text_of(self, row: Mapping[str, Any], text_cols: Sequence[str]) -> str:
        if len(text_cols) == 1 and not (self.subject_column or self.body_column) and text_cols[0] == (
            self.text_column or "text"
        ):
            return ticket_text(None, as_text(row.get(text_cols[0])))
        subject_col = self.subject_column or ("subject" if "subject" in text_cols else None)
        body_col = self.body_column or ("body" if "body" in text_cols else None)
        subject = as_text(row.get(subject_col)) if subject_col else None
        body = as_text(row.get(body_col)) if body_col else None
        return ticket_text(subject, body)


def parse_label_columns(spec: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["queue", "prio=Priority"]`` or ``{"prio": "Priority"}`` -> ``{field: column}``."""
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    if isinstance(spec, str):
        spec = [spec]
    out: dict[str, str] = {}
    for item in spec:
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not name or (sep and not column):
            raise DataError(f"invalid label column {item!r}: use COLUMN or FIELD=COLUMN")
        out[name] = column if sep else name
    return out


def as_text(value: Any) -> str | None:
    """A cell as text: strings as they are, JSON objects and lists as JSON, other values with ``str``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
