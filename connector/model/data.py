"""Labelled ticket data: loading (CSV, JSON, JSONL), validation, de-duplication, splitting.

``load_labeled_file(path)`` streams the file row by row (bounded memory:
the file is never read whole), detects the encoding (UTF-8, UTF-8 with BOM,
Latin-1), builds each ticket's model input with :func:`connector.text.ticket_text`
(the same cleaning the routing engine applies), drops exact duplicates and
validates the result.  Every problem is reported with its line and column in
a :class:`DataError`.

Text comes from one column (``text_column``, default ``text``) or from a
subject and a body column (default ``subject`` + ``body``).  Labels come from
one column per field; ``label_columns`` names them either as a list of column
names (the field is called like the column) or as a mapping ``{field: column}``
(e.g. ``{"queue": "Topic_group"}``).  By default the fields ``queue`` and
``priority`` are used where the file has them.  An empty label cell means "not
labelled for this field": the row is used for the other fields only.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from connector.text import ticket_text

#: label fields read when no label columns are named
DEFAULT_LABEL_COLUMNS = ("queue", "priority")
#: characters of cleaned text kept per example (models read far fewer tokens); bounds memory
DEFAULT_MAX_TEXT_CHARS = 5_000
#: the largest single CSV field accepted (a longer one is almost always an unbalanced quote)
MAX_FIELD_CHARS = 1_000_000
#: problems collected before loading stops
MAX_PROBLEMS = 20

FileFormat = Literal["csv", "json", "jsonl"]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class DataProblem:
    """One problem in the input: where (1-based line, column name) and what."""

    message: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "message": self.message}


class DataError(ValueError):
    """The labelled data cannot be used.  ``problems`` lists each problem with line and column.

    ``line``, ``column`` and ``message`` are those of the first problem.
    """

    def __init__(self, problems: Sequence[DataProblem] | DataProblem | str, *, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [DataProblem(problems)]
        elif isinstance(problems, DataProblem):
            problems = [problems]
        self.problems: list[DataProblem] = list(problems) or [DataProblem("invalid data")]
        self.source = source
        first = self.problems[0]
        self.line = first.line
        self.column = first.column
        self.message = first.message
        prefix = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{prefix}{first}"
        else:
            text = f"{prefix}{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(text)

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "problems": [p.as_dict() for p in self.problems]}


#: alias, for callers that prefer the name
DatasetError = DataError


# --------------------------------------------------------------------------- the data


@dataclass(slots=True)
class LabeledData:
    """Cleaned, de-duplicated labelled tickets.

    ``texts[i]`` is the model input of example *i*; ``labels[field][i]`` its
    label for ``field`` (``None`` when the example has no label for that field);
    ``lines[i]`` the line of the source file where it starts.
    """

    texts: list[str]
    labels: dict[str, list[str | None]]
    lines: list[int] = field(default_factory=list)
    source: str = "<data>"
    #: statistics of loading: rows read, duplicates dropped, empty rows skipped, ...
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lines:
            self.lines = list(range(1, len(self.texts) + 1))
        for name, values in self.labels.items():
            if len(values) != len(self.texts):
                raise ValueError(f"field {name!r} has {len(values)} labels for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.labels)

    def label_counts(self, field_name: str) -> dict[str, int]:
        """Examples per label of one field (unlabelled ones left out), most frequent first."""
        counts = Counter(v for v in self.labels[field_name] if v is not None)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def all_label_counts(self) -> dict[str, dict[str, int]]:
        return {name: self.label_counts(name) for name in self.labels}

    def labels_of(self, field_name: str) -> list[str]:
        """The sorted distinct labels of a field."""
        return sorted(self.label_counts(field_name))

    def subset(self, indices: Iterable[int]) -> LabeledData:
        idx = list(indices)
        return LabeledData(
            texts=[self.texts[i] for i in idx],
            labels={name: [values[i] for i in idx] for name, values in self.labels.items()},
            lines=[self.lines[i] for i in idx],
            source=self.source,
            stats={},
        )

    def for_field(self, field_name: str) -> tuple[list[str], list[str]]:
        """Texts and labels of the examples labelled for ``field_name``."""
        if field_name not in self.labels:
            raise DataError(f"the data has no label field {field_name!r} (fields: {', '.join(self.labels) or 'none'})")
        texts: list[str] = []
        labels: list[str] = []
        for text, label in zip(self.texts, self.labels[field_name]):
            if label is not None:
                texts.append(text)
                labels.append(label)
        return texts, labels

    def fingerprint(self) -> str:
        """SHA-256 of the examples (text and labels), independent of their order."""
        return fingerprint_examples(self.texts, self.labels)

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "examples": len(self),
            "fields": list(self.labels),
            "label_counts": self.all_label_counts(),
            "fingerprint": self.fingerprint(),
            **({"stats": dict(self.stats)} if self.stats else {}),
        }

    @classmethod
    def from_records(
        cls,
        records: Iterable[tuple[str, Mapping[str, str | None]]],
        *,
        fields: Sequence[str] | None = None,
        source: str = "<records>",
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ) -> LabeledData:
        """Build from ``(text, {field: label})`` pairs (text already cleaned), dropping exact duplicates.

        Used by the learning loop for exported tickets.
        """
        builder = _Builder(list(fields) if fields else None, source, max_text_chars)
        for n, (text, labels) in enumerate(records, start=1):
            builder.add(text, labels, n)
        return builder.result()


def _row_key(text: str, labels: Sequence[str | None]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(text.encode("utf-8", "surrogatepass"))
    for label in labels:
        h.update(b"\x1f" + (label.encode("utf-8") if label is not None else b"\x00"))
    return h.digest()


def fingerprint_examples(texts: Sequence[str], labels: Mapping[str, Sequence[str | None]]) -> str:
    names = sorted(labels)
    keys = sorted(_row_key(t, [labels[n][i] for n in names]) for i, t in enumerate(texts))
    h = hashlib.sha256()
    h.update(("\x1e".join(names)).encode("utf-8"))
    for key in keys:
        h.update(key)
    return h.hexdigest()


class _Builder:
    """Collects examples, cleaning labels and dropping exact duplicates."""

    def __init__(self, fields: list[str] | None, source: str, max_text_chars: int) -> None:
        self.fields = fields
        self.source = source
        self.max_text_chars = max_text_chars
        self.texts: list[str] = []
        self.labels: dict[str, list[str | None]] = {f: [] for f in fields or []}
        self.lines: list[int] = []
        self.seen: set[bytes] = set()
        self.stats: Counter[str] = Counter()

    def add(self, text: str, labels: Mapping[str, str | None], line: int) -> None:
        if self.fields is None:
            self.fields = list(labels)
            self.labels = {f: [] for f in self.fields}
        text = text[: self.max_text_chars]
        values = [_clean_label(labels.get(f)) for f in self.fields]
        key = _row_key(text, values)
        self.stats["rows"] += 1
        if key in self.seen:
            self.stats["duplicates_dropped"] += 1
            return
        self.seen.add(key)
        self.texts.append(text)
        self.lines.append(line)
        for f, v in zip(self.fields, values):
            self.labels[f].append(v)

    def result(self) -> LabeledData:
        self.stats["examples"] = len(self.texts)
        return LabeledData(self.texts, self.labels, self.lines, self.source, dict(self.stats))


def _clean_label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split())
    return text or None


# --------------------------------------------------------------------------- encoding


def detect_encoding(stream: IO[bytes], *, chunk_size: int = 1 << 20) -> str:
    """``utf-8-sig`` (BOM), ``utf-8`` or ``latin-1``, decided by decoding the whole stream in chunks.

    The stream is rewound afterwards.  UTF-16/32 (NUL bytes) is refused.
    """
    start = stream.tell()
    head = stream.read(4)
    stream.seek(start)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
        raise DataError(DataProblem("unknown encoding (UTF-16 or binary data?); save the file as UTF-8", line=1))
    decoder = codecs.getincrementaldecoder("utf-8")()
    encoding = "utf-8"
    while chunk := stream.read(chunk_size):
        if b"\x00" in chunk:
            stream.seek(start)
            raise DataError(DataProblem("unknown encoding (NUL bytes: UTF-16 or binary data?); save as UTF-8"))
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            encoding = "latin-1"
            break
    else:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            encoding = "latin-1"
    stream.seek(start)
    return encoding


# --------------------------------------------------------------------------- columns


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
            return ticket_text(None, _as_text(row.get(text_cols[0])))
        subject_col = self.subject_column or ("subject" if "subject" in text_cols else None)
        body_col = self.body_column or ("body" if "body" in text_cols else None)
        subject = _as_text(row.get(subject_col)) if subject_col else None
        body = _as_text(row.get(body_col)) if body_col else None
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


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# --------------------------------------------------------------------------- readers


def guess_format(name: str) -> FileFormat:
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".json"):
        return "json"
    return "csv"


def _iter_csv(text: IO[str]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    sample = text.read(64 * 1024)
    text.seek(0)
    delimiter = ","
    first_line = sample.split("\n", 1)[0]
    if first_line.count(";") > first_line.count(",") and first_line.count(";") > first_line.count("\t"):
        delimiter = ";"
    elif first_line.count("\t") > first_line.count(","):
        delimiter = "\t"
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(DataProblem("the file is empty", line=1)) from None
    except csv.Error as exc:
        raise DataError(DataProblem(f"unreadable header: {exc}", line=1)) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(DataProblem("the first line must be a header naming the columns", line=1))
    dupes = [h for h, n in Counter(header).items() if n > 1 and h]
    if dupes:
        raise DataError(DataProblem(f"duplicate column names: {', '.join(dupes)}", line=1))

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                msg = str(exc)
                if "end of data" in msg or "field larger" in msg or "EOF" in msg:
                    msg = "unbalanced quote: a quoted field that starts here is never closed"
                raise DataError(DataProblem(msg, line=start)) from None
            if not row or all(not cell.strip() for cell in row):
                yield start, {}
                continue
            if len(row) != len(header):
                what = "more" if len(row) > len(header) else "fewer"
                raise DataError(
                    DataProblem(
                        f"row has {len(row)} fields, {what} than the {len(header)} columns of the header "
                        "(a stray delimiter or an unbalanced quote?)",
                        line=start,
                    )
                )
            yield start, dict(zip(header, row))

    return header, rows()


#: the problem of JSON nested deeper than the parser's recursion limit (no ticket is)
_TOO_DEEP = "invalid JSON: nested too deeply"


def _iter_jsonl(text: IO[str]) -> tuple[list[str] | None, Iterator[tuple[int, dict[str, Any]]]]:
    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for n, line in enumerate(text, start=1):
            if not line.strip():
                yield n, {}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(DataProblem(f"invalid JSON: {exc.msg} (column {exc.colno})", line=n)) from None
            except RecursionError:
                raise DataError(DataProblem(_TOO_DEEP, line=n)) from None
            if not isinstance(obj, dict):
                raise DataError(DataProblem("each line must be a JSON object", line=n))
            yield n, obj

    return None, rows()


def _iter_json_array(text: IO[str], *, chunk_size: int = 1 << 16) -> tuple[list[str] | None, Iterator[tuple[int, dict[str, Any]]]]:
    """Stream the objects of a top-level JSON array (or of ``{"tickets"|"data"|"items": [...]}``)."""
    decoder = json.JSONDecoder()

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        buf = ""
        pos = 0
        line = 1
        eof = False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = text.read(chunk_size)
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def skip_ws() -> str | None:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    if buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not fill():
                    return None

        def expect(chars: str, what: str) -> str:
            nonlocal pos
            c = skip_ws()
            if c is None or c not in chars:
                raise DataError(DataProblem(f"invalid JSON: expected {what}", line=line))
            pos += 1
            return c

        c = skip_ws()
        if c == "{":
            # {"tickets": [...]}: find the array under a known key
            pos += 1
            key_c = skip_ws()
            if key_c != '"':
                raise DataError(DataProblem("invalid JSON: expected a key", line=line))
            while True:
                try:
                    key, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError:
                    if not fill():
                        raise DataError(DataProblem("invalid JSON object", line=line)) from None
            pos = end
            if key not in ("tickets", "data", "items", "records", "examples"):
                raise DataError(
                    DataProblem("a JSON object must hold the tickets under 'tickets' (or 'data', 'items')", line=line)
                )
            expect(":", "':'")
            c = skip_ws()
        if c != "[":
            raise DataError(DataProblem("JSON data must be an array of ticket objects (or use JSON Lines)", line=line))
        pos += 1
        first = True
        while True:
            c = skip_ws()
            if c is None:
                raise DataError(DataProblem("invalid JSON: the array is never closed", line=line))
            if c == "]":
                return
            if not first:
                expect(",", "',' or ']'")
                skip_ws()
            first = False
            start_line = line
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    # a number or literal cut at the buffer's end would parse short: make sure more follows
                    if end >= len(buf) and not eof and fill():
                        continue
                    break
                except json.JSONDecodeError as exc:
                    if fill():
                        continue
                    raise DataError(DataProblem(f"invalid JSON: {exc.msg}", line=start_line)) from None
                except RecursionError:
                    raise DataError(DataProblem(_TOO_DEEP, line=start_line)) from None
            line += buf.count("\n", pos, end)
            pos = end
            if not isinstance(obj, dict):
                raise DataError(DataProblem("each element of the array must be an object", line=start_line))
            yield start_line, obj

    return None, rows()


# --------------------------------------------------------------------------- loading


def load_labeled_stream(
    stream: IO[bytes],
    *,
    name: str = "<upload>",
    format: FileFormat | None = None,
    text_column: str | None = None,
    subject_column: str | None = None,
    body_column: str | None = None,
    label_columns: Sequence[str] | Mapping[str, str] | None = None,
    encoding: str | None = None,
    min_examples_per_class: int = 2,
    validate: bool = True,
    skip_invalid: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> LabeledData:
    """Load labelled tickets from a seekable binary stream.  See :func:`load_labeled_file`."""
    spec = ColumnSpec.build(
        text_column=text_column, subject_column=subject_column, body_column=body_column, label_columns=label_columns
    )
    fmt = format or guess_format(name)
    try:
        enc = encoding or detect_encoding(stream)
    except DataError as exc:
        raise DataError(exc.problems, source=name) from None
    text = io.TextIOWrapper(stream, encoding=enc, newline="" if fmt == "csv" else None, errors="strict")
    try:
        return _load_text(text, name, fmt, spec, min_examples_per_class, validate, skip_invalid, max_text_chars)
    except DataError as exc:
        if exc.source is None:
            raise DataError(exc.problems, source=name) from None
        raise
    except UnicodeDecodeError as exc:
        raise DataError(DataProblem(f"cannot decode as {enc}: {exc.reason}"), source=name) from None
    finally:
        text.detach()


def _load_text(
    text: IO[str],
    name: str,
    fmt: FileFormat,
    spec: ColumnSpec,
    min_examples_per_class: int,
    validate: bool,
    skip_invalid: bool,
    max_text_chars: int,
) -> LabeledData:
    if fmt == "csv":
        header, rows = _iter_csv(text)
    elif fmt == "jsonl":
        header, rows = _iter_jsonl(text)
    else:
        header, rows = _iter_json_array(text)
    resolved: tuple[list[str], dict[str, str]] | None = spec.resolve(header) if header is not None else None
    builder: _Builder | None = None
    problems: list[DataProblem] = []
    skipped = Counter[str]()
    seen_raw: set[bytes] = set()
    for line, row in rows:
        if not row:
            skipped["empty_rows_skipped"] += 1
            continue
        if resolved is None:
            # JSON: resolve the columns against the keys of the first object
            resolved = spec.resolve(list(row))
        text_cols, label_map = resolved
        if builder is None:
            builder = _Builder(list(label_map), name, max_text_chars)
        raw_key = _raw_key(row, text_cols, label_map.values())
        if raw_key in seen_raw:
            # the same raw row again: an exact duplicate, no need to clean it again
            builder.stats["rows"] += 1
            builder.stats["duplicates_dropped"] += 1
            continue
        seen_raw.add(raw_key)
        row_problems: list[DataProblem] = []
        for col in text_cols + list(label_map.values()):
            if col not in row and fmt != "csv":
                row_problems.append(DataProblem("missing key", line=line, column=col))
        ticket = spec.text_of(row, text_cols) if not row_problems else ""
        if not row_problems and not ticket:
            row_problems.append(DataProblem("empty text", line=line, column="+".join(text_cols)))
        labels = {f: _clean_label(row.get(col)) for f, col in label_map.items()}
        if not row_problems and all(v is None for v in labels.values()):
            row_problems.append(DataProblem("no label", line=line, column="+".join(label_map.values())))
        if row_problems:
            if skip_invalid:
                skipped["invalid_rows_skipped"] += 1
                continue
            problems.extend(row_problems)
            if len(problems) >= MAX_PROBLEMS:
                break
            continue
        builder.add(ticket, labels, line)
    if problems:
        raise DataError(problems[:MAX_PROBLEMS], source=name)
    if builder is None:
        if resolved is None and header is None:
            raise DataError(DataProblem("the file holds no tickets"), source=name)
        raise DataError(DataProblem("the file holds no tickets (only a header or empty rows)"), source=name)
    data = builder.result()
    data.stats.update(skipped)
    if validate:
        validate_data(data, min_examples_per_class=min_examples_per_class)
    return data


def _raw_key(row: Mapping[str, Any], text_cols: Iterable[str], label_cols: Iterable[str]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for col in (*text_cols, "\x1d", *label_cols):
        h.update(b"\x1f" + repr(row.get(col)).encode("utf-8", "surrogatepass"))
    return h.digest()


def load_labeled_file(
    path: str | os.PathLike[str],
    *,
    format: FileFormat | None = None,
    text_column: str | None = None,
    subject_column: str | None = None,
    body_column: str | None = None,
    label_columns: Sequence[str] | Mapping[str, str] | None = None,
    encoding: str | None = None,
    min_examples_per_class: int = 2,
    validate: bool = True,
    skip_invalid: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> LabeledData:
    """Load labelled tickets from a CSV, JSON (array of objects) or JSON Lines file.

    The format follows the suffix (``.csv``, ``.json``, ``.jsonl``/``.ndjson``)
    unless ``format`` is given; the encoding (UTF-8, UTF-8 with BOM, Latin-1)
    is detected unless given.  The file is streamed: memory grows with the
    kept (cleaned, de-duplicated, ``max_text_chars``-bounded) examples only.

    Raises :class:`DataError` (with line and column) for a missing column, a
    row with more or fewer fields than the header, an unbalanced quote, empty
    text, a row without any label, an unreadable encoding, and — when
    ``validate`` — a field with a single class or a label with fewer than
    ``min_examples_per_class`` examples.  ``skip_invalid`` skips rows with
    empty text or no label instead (counted in ``stats``).  Blank rows are
    always skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(DataProblem("file not found"), source=str(path))
    with path.open("rb") as stream:
        return load_labeled_stream(
            stream,
            name=str(path),
            format=format or guess_format(path.name),
            text_column=text_column,
            subject_column=subject_column,
            body_column=body_column,
            label_columns=label_columns,
            encoding=encoding,
            min_examples_per_class=min_examples_per_class,
            validate=validate,
            skip_invalid=skip_invalid,
            max_text_chars=max_text_chars,
        )


def load_labeled_bytes(
    content: bytes,
    *,
    filename: str = "upload.csv",
    format: FileFormat | None = None,
    text_column: str | None = None,
    subject_column: str | None = None,
    body_column: str | None = None,
    label_columns: Sequence[str] | Mapping[str, str] | None = None,
    encoding: str | None = None,
    min_examples_per_class: int = 2,
    validate: bool = True,
    skip_invalid: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> LabeledData:
    """Like :func:`load_labeled_file` for an uploaded body; ``filename`` picks the format."""
    return load_labeled_stream(
        io.BytesIO(content),
        name=filename,
        format=format or guess_format(filename),
        text_column=text_column,
        subject_column=subject_column,
        body_column=body_column,
        label_columns=label_columns,
        encoding=encoding,
        min_examples_per_class=min_examples_per_class,
        validate=validate,
        skip_invalid=skip_invalid,
        max_text_chars=max_text_chars,
    )


# --------------------------------------------------------------------------- validation and splitting


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


def split(
    data: LabeledData, fraction: float = 0.2, seed: int = 42, *, stratify: str | None = None
) -> tuple[LabeledData, LabeledData]:
    """Stratified ``(train, validation)`` split; ``fraction`` of each class goes to validation.

    Stratified on the field ``stratify`` (default: the first field).  A class
    with a single example stays in training; every class with two or more has
    at least one example on each side.  Deterministic for a given seed.
    """
    if not 0 < fraction < 1:
        raise ValueError("fraction must be between 0 and 1")
    key_field = stratify or (data.fields[0] if data.fields else None)
    groups: dict[str | None, list[int]] = {}
    for i in range(len(data)):
        label = data.labels[key_field][i] if key_field else None
        groups.setdefault(label, []).append(i)
    rng = random.Random(seed)
    train_idx: list[int] = []
    valid_idx: list[int] = []
    for label in sorted(groups, key=lambda x: (x is None, x or "")):
        idx = groups[label]
        rng.shuffle(idx)
        n_valid = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_valid = min(max(n_valid, 1), len(idx) - 1)
        else:
            n_valid = 0
        valid_idx.extend(idx[:n_valid])
        train_idx.extend(idx[n_valid:])
    train_idx.sort()
    valid_idx.sort()
    return data.subset(train_idx), data.subset(valid_idx)
