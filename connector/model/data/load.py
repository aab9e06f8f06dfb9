"""Loading labelled tickets from a file, an upload or a stream, and validating them for training.

How a file is read (format, columns, encoding, validation) is one
:class:`LoadOptions`.  The load functions take it as ``options`` and, for the
callers that name them one by one, its fields as keyword arguments too
(``load_labeled_file(path, text_column="Document")``); keywords override the
fields of ``options``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, TypedDict, Unpack

from connector.model.data.columns import ColumnSpec
from connector.model.data.readers import READERS, FileFormat, detect_encoding, guess_format
from connector.model.data.records import (
    DEFAULT_MAX_TEXT_CHARS,
    MAX_PROBLEMS,
    DataError,
    DataProblem,
    ExampleBuilder,
    LabeledData,
    clean_label,
)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to read labelled tickets.

    ``format``: ``csv``, ``json`` or ``jsonl`` (default: from the file name's
    suffix).  The text comes from ``text_column`` or from ``subject_column`` +
    ``body_column`` (default ``text``, else ``subject`` + ``body``);
    ``label_columns`` names the label columns as ``["queue", "prio=Priority"]``
    or ``{"prio": "Priority"}`` (default: ``queue`` and ``priority`` where
    present).  ``encoding``: detected unless given.  ``validate``: check that
    every field has two classes with ``min_examples_per_class`` examples each.
    ``skip_invalid``: skip rows with empty text or no label (counted in
    ``stats``) instead of reporting them.  ``max_text_chars``: cleaned text
    kept per example.
    """

    format: FileFormat | None = None
    text_column: str | None = None
    subject_column: str | None = None
    body_column: str | None = None
    label_columns: Sequence[str] | Mapping[str, str] | None = None
    encoding: str | None = None
    min_examples_per_class: int = 2
    validate: bool = True
    skip_invalid: bool = False
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS

    @classmethod
    def merged(cls, options: LoadOptions | None, keywords: Mapping[str, Any]) -> LoadOptions:
        """``options`` (default: the defaults) with the fields named in ``keywords`` replaced."""
        base = options if options is not None else cls()
        return replace(base, **keywords) if keywords else base

    def column_spec(self) -> ColumnSpec:
        """The text and label columns asked for (DataError for a bad combination or label column)."""
        return ColumnSpec.build(
            text_column=self.text_column,
            subject_column=self.subject_column,
            body_column=self.body_column,
            label_columns=self.label_columns,
        )


class LoadKeywords(TypedDict, total=False):
    """The fields of :class:`LoadOptions`, as keyword arguments of the load functions."""

    format: FileFormat | None
    text_column: str | None
    subject_column: str | None
    body_column: str | None
    label_columns: Sequence[str] | Mapping[str, str] | None
    encoding: str | None
    min_examples_per_class: int
    validate: bool
    skip_invalid: bool
    max_text_chars: int


def load_labeled_stream(
    stream: IO[bytes], options: LoadOptions | None = None, *, name: str = "<upload>", **keywords: Unpack[LoadKeywords]
) -> LabeledData:
    """Load labelled tickets from a seekable binary stream.  See :func:`load_labeled_file`."""
    opts = LoadOptions.merged(options, keywords)
    spec = opts.column_spec()
    fmt = opts.format or guess_format(name)
    try:
        enc = opts.encoding or detect_encoding(stream)
    except DataError as exc:
        raise DataError(exc.problems, source=name) from None
    text = io.TextIOWrapper(stream, encoding=enc, newline="" if fmt == "csv" else None, errors="strict")
    try:
        return _load_text(text, name, fmt, spec, opts)
    except DataError as exc:
        if exc.source is None:
            raise DataError(exc.problems, source=name) from None
        raise
    except UnicodeDecodeError as exc:
        raise DataError(DataProblem(f"cannot decode as {enc}: {exc.reason}"), source=name) from None
    finally:
        text.detach()


def load_labeled_file(
    path: str | os.PathLike[str], options: LoadOptions | None = None, **keywords: Unpack[LoadKeywords]
) -> LabeledData:
    """Load labelled tickets from a CSV, JSON (array of objects) or JSON Lines file.

    The format follows the suffix (``.csv``, ``.json``, ``.jsonl``/``.ndjson``)
    unless ``format`` is given; the encoding (UTF-8, UTF-8 with BOM, Latin-1)
    is detected unless given.  The file is streamed: memory grows with the
    kept (cleaned, de-duplicated, ``max_text_chars``-bounded) examples only.
    ``options`` (or its fields as keywords): see :class:`LoadOptions`.

    Raises :class:`DataError` (with line and column) for a missing column, a
    row with more or fewer fields than the header, an unbalanced quote, empty
    text, a row without any label, invalid JSON, an unreadable encoding, and
    — when ``validate`` — a field with a single class or a label with fewer
    than ``min_examples_per_class`` examples.  ``skip_invalid`` skips rows
    with empty text or no label instead (counted in ``stats``).  Blank rows
    are always skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(DataProblem("file not found"), source=str(path))
    with path.open("rb") as stream:
        return load_labeled_stream(stream, LoadOptions.merged(options, keywords), name=str(path))


def load_labeled_bytes(
    content: bytes,
    options: LoadOptions | None = None,
    *,
    filename: str = "upload.csv",
    **keywords: Unpack[LoadKeywords],
) -> LabeledData:
    """Like :func:`load_labeled_file` for an uploaded body; ``filename`` picks the format."""
    return load_labeled_stream(io.BytesIO(content), LoadOptions.merged(options, keywords), name=filename)


def _load_text(text: IO[str], name: str, fmt: FileFormat, spec: ColumnSpec, options: LoadOptions) -> LabeledData:
    header, rows = READERS[fmt](text)
    collector = _RowCollector(name, fmt, spec, options, header)
    for line, row in rows:
        if not collector.add(line, row):
            break
    data = collector.result()
    if options.validate:
        validate_data(data, min_examples_per_class=options.min_examples_per_class)
    return data


class _RowCollector:
    """Turns raw rows into examples: resolves the columns, cleans, checks, de-duplicates, counts."""

    def __init__(self, name: str, fmt: FileFormat, spec: ColumnSpec, options: LoadOptions, header: list[str] | None) -> None:
        self.name = name
        self.fmt = fmt
        self.spec = spec
        self.options = options
        self.header = header
        self.resolved: tuple[list[str], dict[str, str]] | None = spec.resolve(header) if header is not None else None
        self.builder: ExampleBuilder | None = None
        self.problems: list[DataProblem] = []
        self.skipped = Counter[str]()
        self.seen_raw: set[bytes] = set()

    def add(self, line: int, row: Mapping[str, Any]) -> bool:
        """Take one row; False once too many problems were found to go on."""
        if not row:
            self.skipped["empty_rows_skipped"] += 1
            return True
        if self.resolved is None:
            # JSON: resolve the columns against the keys of the first object
            self.resolved = self.spec.resolve(list(row))
        text_cols, label_map = self.resolved
        if self.builder is None:
            self.builder = ExampleBuilder(list(label_map), self.name, self.options.max_text_chars)
        raw_key = _raw_key(row, text_cols, label_map.values())
        if raw_key in self.seen_raw:
            # the same raw row again: an exact duplicate, no need to clean it again
            self.builder.stats["rows"] += 1
            self.builder.stats["duplicates_dropped"] += 1
            return True
        self.seen_raw.add(raw_key)
        ticket, labels, row_problems = self._example(line, row, text_cols, label_map)
        if not row_problems:
            self.builder.add(ticket, labels, line)
        elif self.options.skip_invalid:
            self.skipped["invalid_rows_skipped"] += 1
        else:
            self.problems.extend(row_problems)
        return len(self.problems) < MAX_PROBLEMS

    def _example(
        self, line: int, row: Mapping[str, Any], text_cols: list[str], label_map: dict[str, str]
    ) -> tuple[str, dict[str, str | None], list[DataProblem]]:
        """The cleaned text and labels of a row, and what is wrong with it."""
        problems: list[DataProblem] = []
        for col in text_cols + list(label_map.values()):
            if col not in row and self.fmt != "csv":
                problems.append(DataProblem("missing key", line=line, column=col))
        ticket = self.spec.text_of(row, text_cols) if not problems else ""
        if not problems and not ticket:
            problems.append(DataProblem("empty text", line=line, column="+".join(text_cols)))
        labels = {f: clean_label(row.get(col)) for f, col in label_map.items()}
        if not problems and all(v is None for v in labels.values()):
            problems.append(DataProblem("no label", line=line, column="+".join(label_map.values())))
        return ticket, labels, problems

    def result(self) -> LabeledData:
        if self.problems:
            raise DataError(self.problems[:MAX_PROBLEMS], source=self.name)
        if self.builder is None:
            if self.resolved is None and self.header is None:
                raise DataError(DataProblem("the file holds no tickets"), source=self.name)
            raise DataError(DataProblem("the file holds no tickets (only a header or empty rows)"), source=self.name)
        data = self.builder.result()
        data.stats.update(self.skipped)
        return data


def _raw_key(row: Mapping[str, Any], text_cols: Iterable[str], label_cols: Iterable[str]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for col in (*text_cols, "\x1d", *label_cols):
        h.update(b"\x1f" + repr(row.get(col)).encode("utf-8", "surrogatepass"))
    return h.digest()


def validate_data(
    data: LabeledData, *, fields: Sequence[str] | None = None, min_examples_per_class: int = 2
) -> None:
    """DataError unless every field has at least two classes, each with ``min_examples_per_class`` examples."""
    problems: list[DataProblem] = []
    if len(data) == 0:
        raise DataError(DataProblem("no examples"), source=data.source)
    for name in fields or data.fields:
        if name not in data.labels:
            problems.append(DataProblem(f"no label field {name!r} in the data", column=name))
            continue
        counts = data.label_counts(name)
        if len(counts) < 2:
            only = f" (only {next(iter(counts))!r})" if counts else ""
            problems.append(DataProblem(f"a single class{only}: a classifier needs at least two", column=name))
            continue
        for label, n in counts.items():
            if n < min_examples_per_class:
                first = next(
                    data.lines[i] for i, v in enumerate(data.labels[name]) if v == label
                )
                problems.append(
                    DataProblem(
                        f"label {label!r} has {n} example(s), at least {min_examples_per_class} are needed "
                        "(add examples, merge it into another label, or remove its rows)",
                        line=first,
                        column=name,
                    )
                )
    if problems:
        raise DataError(problems[:MAX_PROBLEMS], source=data.source)
