"""The labelled data itself: :class:`LabeledData`, the problems found loading it, its fingerprint."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: characters of cleaned text kept per example (models read far fewer tokens); bounds memory
DEFAULT_MAX_TEXT_CHARS = 5_000
#: problems collected before loading stops
MAX_PROBLEMS = 20


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


class ExampleBuilder:
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
        values = [clean_label(labels.get(f)) for f in self.fields]
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


def clean_label(value: Any) -> str | None:
    """A label as stripped, whitespace-folded text (``3.0`` -> ``"3"``); None when empty."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split())
    return text or None

