"""Generic REST adapter: connect a home-grown helpdesk by configuration only.

Everything system-specific is a setting (see ``docs/generic_rest.md``):

* ``base_url`` and ``auth`` (none, bearer, basic, a token in a named header or
  a query parameter; secrets also as ``*_file``);
* one request template per operation (``list_new``, ``get_ticket``,
  ``update``, ``add_note``, ``find_note``, ``list_resolved``, ``queues``, ``priorities``):
  method, URL path with ``{placeholders}``, query parameters and a JSON body
  template;
* ``paging`` (page numbers, offsets, "after the last id" or server cursors);
* ``fields``: dotted JSON paths (``data.items``, ``fields.subject``,
  ``articles[0].body``) of the items list and of each ticket field.

Placeholders: ``{id}``, ``{queue}``, ``{priority}``, ``{note}``,
``{subject}`` (the note's subject), ``{since}``, and in ``list_new``
``{queues}`` / ``{states}`` (the source queues/states joined by commas).  A template string that is
exactly one placeholder is replaced by the value itself (``{id:int}`` converts
to a number) and, when the value is absent, the key is left out of the JSON
body (so an update that only sets the priority does not send ``queue``).

The package: :mod:`.settings`, :mod:`.paths` (JSON paths), :mod:`.templates`,
:mod:`.paging` and :mod:`.adapter`.
"""

from __future__ import annotations

from adapters.common import parse_time
from adapters.generic_rest.adapter import GenericRestAdapter
from adapters.generic_rest.paths import JsonPathError, get_path, parse_path
from adapters.generic_rest.settings import AuthSettings, GenericRestSettings, PagingSettings
from adapters.generic_rest.templates import format_since, render_json, render_text, uses_placeholder

__all__ = [
    "AuthSettings",
    "GenericRestAdapter",
    "GenericRestSettings",
    "JsonPathError",
    "PagingSettings",
    "format_since",
    "get_path",
    "parse_path",
    "parse_time",
    "render_json",
    "render_text",
    "uses_placeholder",
]
