"""Request templates: ``{placeholders}`` in paths, query parameters and JSON bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from adapters.generic_rest.paths import MISSING

_PLACEHOLDER = re.compile(r"\{(\w+)(?::(int|float|str))?\}")
_WHOLE = re.compile(r"^\{(\w+)(?::(int|float|str))?\}$")


def _convert(value: Any, kind: str | None) -> Any:
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "str":
        return str(value)
    return value


def render_text(template: str, values: Mapping[str, Any], *, encode: bool = False) -> str:
    """Replace known ``{name}`` placeholders in a string (unknown braces stay as they are)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        text = "" if value is None else str(value)
        return quote(text, safe="") if encode else text

    return _PLACEHOLDER.sub(sub, template)


def render_json(template: Any, values: Mapping[str, Any]) -> Any:
    """A JSON body from its template; whole-placeholder strings keep the value's type or drop the key."""
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole and whole.group(1) in values:
            value = values[whole.group(1)]
            return MISSING if value is None else _convert(value, whole.group(2))
        return render_text(template, values)
    if isinstance(template, dict):
        out = {}
        for key, item in template.items():
            rendered = render_json(item, values)
            if rendered is not MISSING:
                out[render_text(str(key), values)] = rendered
        return out
    if isinstance(template, list):
        return [r for r in (render_json(item, values) for item in template) if r is not MISSING]
    return template


def uses_placeholder(template: Any, name: str) -> bool:
    if isinstance(template, str):
        return any(m.group(1) == name for m in _PLACEHOLDER.finditer(template))
    if isinstance(template, dict):
        return any(uses_placeholder(k, name) or uses_placeholder(v, name) for k, v in template.items())
    if isinstance(template, list):
        return any(uses_placeholder(v, name) for v in template)
    return False


def format_since(when: datetime, fmt: str) -> str:
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if fmt == "iso":
        return when.isoformat().replace("+00:00", "Z")
    if fmt == "epoch":
        return str(int(when.timestamp()))
    if fmt == "epoch_ms":
        return str(int(when.timestamp() * 1000))
    return when.strftime(fmt)


def render_params(template: Mapping[str, Any], values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters from their template; a whole placeholder whose value is absent drops the parameter."""
    out: list[tuple[str, str]] = []
    for key, raw in template.items():
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if isinstance(item, str):
                whole = _WHOLE.match(item)
                if whole and whole.group(1) in values and values[whole.group(1)] is None:
                    continue  # an absent value drops the parameter
                out.append((key, render_text(item, values)))
            elif isinstance(item, bool):
                out.append((key, "true" if item else "false"))
            else:
                out.append((key, str(item)))
    return out
