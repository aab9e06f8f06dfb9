"""Readers: encoding detection and the CSV, JSON Lines and JSON (array) row iterators.

Each reader takes decoded text and returns ``(header, rows)``: the CSV header
(``None`` for JSON, whose columns are the keys of the first object) and an
iterator of ``(line, row)`` pairs, ``line`` being the 1-based line where the
row starts and ``row`` a mapping (empty for a blank row).  Syntax errors are
raised as :class:`~connector.model.data.records.DataError` naming the line.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Any, Literal

import ijson

from connector.model.data.records import DataError, DataProblem

#: the largest single CSV field accepted (a longer one is almost always an unbalanced quote)
MAX_FIELD_CHARS = 1_000_000
#: keys of a top-level JSON object under which the array of tickets may stand
JSON_WRAPPER_KEYS = ("tickets", "data", "items", "records", "examples")

FileFormat = Literal["csv", "json", "jsonl"]
#: ``(line, row)`` pairs of a reader
Rows = Iterator[tuple[int, dict[str, Any]]]
#: the problem of JSON nested deeper than the parser's recursion limit (no ticket is)
TOO_DEEP = "invalid JSON: nested too deeply"
#: how deep a ticket object may nest (its fields are text and labels; JSON parsers recurse about 1,000 deep)
MAX_JSON_DEPTH = 64


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


# --------------------------------------------------------------------------- readers


def guess_format(name: str) -> FileFormat:
    """The format a file name's suffix stands for: ``.jsonl``/``.ndjson``, ``.json``, else CSV."""
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".json"):
        return "json"
    return "csv"


def iter_csv(text: IO[str]) -> tuple[list[str], Rows]:
    """The header and rows of a CSV text; the delimiter (``,`` ``;`` tab) is guessed from the first line."""
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

    def rows() -> Rows:
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


def iter_jsonl(text: IO[str]) -> tuple[None, Rows]:
    """The objects of a JSON Lines text, one per line."""

    def rows() -> Rows:
        for n, line in enumerate(text, start=1):
            if not line.strip():
                yield n, {}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(DataProblem(f"invalid JSON: {exc.msg} (column {exc.colno})", line=n)) from None
            except RecursionError:
                raise DataError(DataProblem(TOO_DEEP, line=n)) from None
            if not isinstance(obj, dict):
                raise DataError(DataProblem("each line must be a JSON object", line=n))
            yield n, obj

    return None, rows()


def iter_json_array(text: IO[str], *, chunk_size: int = 1 << 16) -> tuple[None, Rows]:
    """Stream the objects of a top-level JSON array (or of ``{"tickets"|"data"|"items": [...]}``) with ijson.

    The text goes to the incremental parser a line (at most ``chunk_size``
    characters) at a time, so memory stays bounded by one object and each
    object, and each syntax error, is placed on its line.
    """
    return None, _json_array_rows(text, chunk_size)


def _json_array_rows(text: IO[str], chunk_size: int) -> Rows:
    events = ijson.sendable_list()
    parser = ijson.parse_coro(events, use_float=True)
    walker = _ArrayWalker()
    line = 1
    while piece := text.readline(chunk_size):
        try:
            parser.send(piece.encode("utf-8", "surrogatepass"))
        except ijson.JSONError as exc:
            raise _syntax_error(exc, line, walker) from None
        yield from walker.feed(events, line)
        del events[:]
        if piece.endswith("\n"):
            line += 1
    try:
        parser.close()
    except ijson.JSONError as exc:
        raise _syntax_error(exc, line, walker, at_end=True) from None
    yield from walker.feed(events, line)
    walker.finish(line)


def _syntax_error(exc: ijson.JSONError, line: int, walker: _ArrayWalker, *, at_end: bool = False) -> DataError:
    """The parser's complaint (its first line) placed on ``line``."""
    if at_end and walker.state == "start":
        return _not_an_array(line)
    if at_end and walker.state in ("array", "object"):
        return DataError(DataProblem("invalid JSON: the array is never closed", line=line))
    reason = (str(exc).strip().splitlines() or ["syntax error"])[0]
    return DataError(DataProblem(f"invalid JSON: {reason}", line=line))


def _not_an_array(line: int) -> DataError:
    return DataError(DataProblem("JSON data must be an array of ticket objects (or use JSON Lines)", line=line))


class _ArrayWalker:
    """Follows ijson's parse events down to the array of tickets and builds its objects.

    ``state``: ``start`` (nothing seen), ``key`` (in a top-level object, before its first key),
    ``value`` (after a known key), ``array`` (between elements), ``object`` (inside an element),
    ``done`` (after the array: the rest is only checked for syntax).
    """

    def __init__(self) -> None:
        self.state = "start"
        #: ijson's prefix of the array's elements: ``item`` or ``tickets.item``
        self.item_prefix = "item"
        self.start_line = 0
        self.depth = 0
        self.builder = ijson.ObjectBuilder()

    def feed(self, events: list[tuple[str, str, Any]], line: int) -> Rows:
        for prefix, event, value in events:
            if self.state == "object":
                self._nest(event, line)
                self.builder.event(event, value)
                if event == "end_map" and prefix == self.item_prefix:
                    self.state = "array"
                    yield self.start_line, self.builder.value
            elif self.state == "array":
                self._element(event, value, line)
            elif self.state != "done":
                self._enter(prefix, event, value, line)

    def finish(self, line: int) -> None:
        if self.state != "done":
            raise _not_an_array(line)

    def _enter(self, prefix: str, event: str, value: Any, line: int) -> None:
        """Events before the array: ``[`` or ``{"tickets": [``."""
        if self.state == "start" and event == "start_map":
            self.state = "key"
        elif self.state == "key":
            if event != "map_key" or value not in JSON_WRAPPER_KEYS:
                raise DataError(
                    DataProblem("a JSON object must hold the tickets under 'tickets' (or 'data', 'items')", line=line)
                )
            self.state = "value"
        elif event == "start_array":
            self.state, self.item_prefix = "array", f"{prefix}.item" if prefix else "item"
        else:
            raise _not_an_array(line)

    def _nest(self, event: str, line: int) -> None:
        """Track how deep the element nests; refuse what no ticket needs (it would overflow later code)."""
        if event in ("start_map", "start_array"):
            self.depth += 1
            if self.depth > MAX_JSON_DEPTH:
                raise DataError(DataProblem(TOO_DEEP, line=line))
        elif event in ("end_map", "end_array"):
            self.depth -= 1

    def _element(self, event: str, value: Any, line: int) -> None:
        if event == "end_array":
            self.state = "done"
        elif event != "start_map":
            raise DataError(DataProblem("each element of the array must be an object", line=line))
        else:
            self.state, self.start_line, self.depth = "object", line, 1
            self.builder = ijson.ObjectBuilder()
            self.builder.event(event, value)


#: the reader of each format
READERS: dict[FileFormat, Callable[[IO[str]], tuple[list[str] | None, Rows]]] = {
    "csv": iter_csv,
    "jsonl": iter_jsonl,
    "json": iter_json_array,
}
