"""Export files for use by hand: CSV or JSON Lines, one row per resolved ticket.

Columns: ``system``, ``ticket_id``, ``text``, one column per label field
(``queue``, ``priority``), ``resolved_at``, ``is_eval``.  The files load with
``helpdesk-connector train FILE`` (text column ``text``).  Written to a
temporary file first and renamed, so an interrupted export leaves no half file.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO


class ExportFileError(ValueError):
    pass


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ExportFileError(f"{path}: the output must end in .csv or .jsonl")


class ExampleWriter:
    """Streams rows into ``path`` (atomically renamed on :meth:`close`)."""

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.format = file_format(self.path)
        self.columns = ["system", "ticket_id", "text", *fields, "resolved_at", "is_eval"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._out: TextIO = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._out, fieldnames=self.columns, extrasaction="ignore") if self.format == "csv" else None
        if self._csv is not None:
            self._csv.writeheader()
        self.rows = 0

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.columns})
            else:
                self._out.write(json.dumps({k: row.get(k) for k in self.columns}, ensure_ascii=False) + "\n")
            self.rows += 1

    def close(self) -> None:
        self._out.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._out.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ExampleWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
