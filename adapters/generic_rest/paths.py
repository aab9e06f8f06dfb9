"""Dotted JSON paths (``data.items[0].name``) into decoded answers."""

from __future__ import annotations

import re
from typing import Any

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


class JsonPathError(ValueError):
    pass


def parse_path(path: str) -> tuple[str | int, ...]:
    """``data.items[0].name`` -> ("data", "items", 0, "name"); ``""``, ``"."`` and ``"$"`` are the root."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    text = text.strip(".")
    if not text:
        return ()
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == ".":
            pos += 1
            continue
        match = _PATH_TOKEN.match(text, pos)
        if match is None:
            raise JsonPathError(f"invalid JSON path {path!r} at position {pos}")
        name, index = match.groups()
        if index is not None:
            parts.append(int(index))
        elif name.lstrip("-").isdigit():
            parts.append(int(name))  # ``items.0.name`` works like ``items[0].name``
        else:
            parts.append(name)
        pos = match.end()
    return tuple(parts)


#: what a lookup returns where nothing is (distinct from a JSON null)
MISSING = object()


def get_path(data: Any, path: tuple[str | int, ...], default: Any = None) -> Any:
    """The value at ``path`` in decoded JSON, or ``default`` when any step is missing."""
    current = data
    for part in path:
        if isinstance(part, int):
            if not isinstance(current, list) or not -len(current) <= part < len(current):
                return default
            current = current[part]
        else:
            if not isinstance(current, dict) or part not in current:
                return default
            current = current[part]
    return current



def json_text(value: Any) -> str | None:
    """A JSON scalar as text (``true``/``false`` for booleans); None for null, lists and objects."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None

