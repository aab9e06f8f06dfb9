"""Labelled ticket data: loading (CSV, JSON, JSONL), validation, de-duplication, splitting.

``load_labeled_file(path, options)`` streams the file row by row (bounded memory:
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

Modules: :mod:`.records` (:class:`LabeledData`, :class:`DataProblem`,
:class:`DataError`, the fingerprint), :mod:`.readers` (encoding detection and
the CSV, JSON Lines and streaming JSON readers), :mod:`.columns`
(:class:`ColumnSpec`), :mod:`.load` (:class:`LoadOptions`, the load functions,
:func:`validate_data`) and :mod:`.split`.  Everything is importable from
``connector.model.data``.
"""

from __future__ import annotations

from connector.model.data.columns import DEFAULT_LABEL_COLUMNS, ColumnSpec, parse_label_columns
from connector.model.data.load import (
    LoadKeywords,
    LoadOptions,
    load_labeled_bytes,
    load_labeled_file,
    load_labeled_stream,
    validate_data,
)
from connector.model.data.readers import (
    MAX_FIELD_CHARS,
    FileFormat,
    detect_encoding,
    guess_format,
    iter_csv,
    iter_json_array,
    iter_jsonl,
)
from connector.model.data.records import (
    DEFAULT_MAX_TEXT_CHARS,
    MAX_PROBLEMS,
    DataError,
    DataProblem,
    DatasetError,
    LabeledData,
    fingerprint_examples,
)
from connector.model.data.split import split

__all__ = [
    "DEFAULT_LABEL_COLUMNS",
    "DEFAULT_MAX_TEXT_CHARS",
    "MAX_FIELD_CHARS",
    "MAX_PROBLEMS",
    "ColumnSpec",
    "DataError",
    "DataProblem",
    "DatasetError",
    "FileFormat",
    "LabeledData",
    "LoadKeywords",
    "LoadOptions",
    "detect_encoding",
    "fingerprint_examples",
    "guess_format",
    "iter_csv",
    "iter_json_array",
    "iter_jsonl",
    "load_labeled_bytes",
    "load_labeled_file",
    "load_labeled_stream",
    "parse_label_columns",
    "split",
    "validate_data",
]
