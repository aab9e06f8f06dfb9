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
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.base import (
    Adapter,
    AdapterSettings,
    PermanentError,
    ProtocolError,
    Ticket,
    TicketChange,
    TicketPage,
    UnknownValueError,
)
from adapters.http import HttpSettings, HttpTransport, decode_json

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- JSON paths

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


_MISSING = object()


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


# --------------------------------------------------------------------------- settings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSettings(AdapterSettings):
    """How to authenticate; ``token`` and ``password`` may be given as ``token_file`` / ``password_file``."""

    #: ``none``; ``bearer`` (Authorization: Bearer TOKEN); ``basic`` (username + password);
    #: ``header`` (TOKEN in the header named ``header``, after ``prefix``); ``query`` (TOKEN as query ``param``)
    type: Literal["none", "bearer", "basic", "header", "query"] = "none"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    header: str | None = None
    #: text before the token in the header (e.g. ``"Token token="``)
    prefix: str = ""
    param: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        missing: list[str] = []
        if self.type in ("bearer", "header", "query") and not (self.token and self.token.get_secret_value()):
            missing.append("token (or token_file)")
        if self.type == "basic":
            if not self.username:
                missing.append("username")
            if self.password is None:
                missing.append("password (or password_file)")
        if self.type == "header" and not self.header:
            missing.append("header (the header's name, e.g. X-API-Key)")
        if self.type == "query" and not self.param:
            missing.append("param (the query parameter's name)")
        if missing:
            raise ValueError(f"auth type {self.type!r} needs {', '.join(missing)}")
        return self


class RequestTemplate(_Section):
    """One HTTP request: method, path (relative to ``base_url``) and optional params/body/headers."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    #: URL path with placeholders, e.g. ``/tickets/{id}``
    path: str
    #: query parameters (values may hold placeholders; a list repeats the parameter)
    params: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)
    #: JSON body template (any JSON value; strings may hold placeholders)
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ListRequest(RequestTemplate):
    """A listing of tickets (paged as ``paging`` says)."""

    #: JSON path of the list of tickets in the answer (``""``: the answer is the list)
    items: str = "items"
    #: query parameter that receives each source queue (repeated); none: filter here instead
    queue_param: str | None = None
    #: query parameter that receives each source state (repeated); none: filter here instead
    state_param: str | None = None
    #: query parameter that receives the time since which to list (``list_new``: the saved cursor,
    #: ``list_resolved``: ``since``); ``{since}`` in ``path``/``params`` works too
    since_param: str | None = None
    #: fetch each ticket with ``get_ticket`` when the listing has no body
    fetch_missing_body: bool = True

    @field_validator("items")
    @classmethod
    def _items_path(cls, value: str) -> str:
        parse_path(value)
        return value


def _default_list_new() -> ListRequest:
    return ListRequest(path="/tickets", queue_param="queue", state_param="state")


class GetRequest(RequestTemplate):
    path: str = "/tickets/{id}"
    #: JSON path of the ticket object in the answer (``""``: the answer is the ticket)
    ticket: str = ""

    @field_validator("ticket")
    @classmethod
    def _ticket_path(cls, value: str) -> str:
        parse_path(value)
        return value


class UpdateRequest(RequestTemplate):
    """The request that sets queue and priority (and, if its body uses ``{note}``, adds the note)."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "PATCH"
    path: str = "/tickets/{id}"
    body: Any = Field(default_factory=lambda: {"queue": "{queue}", "priority": "{priority}"})
    #: HTTP statuses that mean "no such queue/priority" (-> UnknownValueError, never retried)
    unknown_value_status: list[int] = Field(default_factory=lambda: [422])
    #: optional regular expression the error answer must match to count as an unknown value
    unknown_value_pattern: str | None = None

    @field_validator("unknown_value_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class NoteRequest(RequestTemplate):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = "/tickets/{id}/notes"
    body: Any = Field(default_factory=lambda: {"subject": "{subject}", "body": "{note}", "internal": True})


class NoteListRequest(RequestTemplate):
    """Reading a ticket's notes, so reconciliation can tell whether a note was written (by its marker)."""

    path: str = "/tickets/{id}/notes"
    #: JSON path of the list of notes in the answer (``""``: the answer is the list)
    items: str = "items"
    #: JSON path of the note's text in each item
    text: str = "body"

    @field_validator("items", "text")
    @classmethod
    def _json_path(cls, value: str) -> str:
        parse_path(value)
        return value


class ValueList(_Section):
    """Where the system's queue (or priority) names come from: a request, or a static list."""

    #: static list of names (no request is made)
    values: list[str] | None = None
    #: GET path listing them
    path: str | None = None
    params: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)
    #: JSON path of the list in the answer
    items: str = "items"
    #: JSON path of the name in each item (``""``: the item is the name)
    name: str = "name"

    @model_validator(mode="after")
    def _one_source(self) -> ValueList:
        if (self.values is None) == (self.path is None):
            raise ValueError("give either 'values' (a static list) or 'path' (a request), not both or neither")
        parse_path(self.items)
        parse_path(self.name)
        return self


class PagingSettings(_Section):
    """How listings are paged.

    ``page``: ``page_param`` = 1, 2, …; ``offset``: ``offset_param`` = 0, n, 2n, …;
    ``after``: ``after_param`` = the id of the last ticket of the previous page
    (keyset paging: stable while tickets leave the listing); ``cursor``: the
    server returns the next page's token at ``next_cursor_path``; ``none``: one request.
    The page size goes in ``size_param``.  A listing ends on an empty page, a
    short page, a falsy ``has_more_path``, or once ``total_path`` tickets were seen.
    With ``send: template`` no query parameter is added: the listing's path,
    params or body place ``{page}``, ``{offset}``, ``{after}``, ``{cursor}`` and
    ``{size}`` themselves (e.g. a POST search with paging in its JSON body).
    """

    style: Literal["page", "offset", "after", "cursor", "none"] = "page"
    send: Literal["query", "template"] = "query"
    size_param: str | None = "per_page"
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    after_param: str = "after_id"
    cursor_param: str = "cursor"
    next_cursor_path: str | None = None
    has_more_path: str | None = None
    total_path: str | None = None
    #: safety stop for runaway paging
    max_pages: int = Field(10_000, ge=1)

    @model_validator(mode="after")
    def _cursor_path(self) -> PagingSettings:
        if self.style == "cursor" and not self.next_cursor_path:
            raise ValueError("paging style 'cursor' needs next_cursor_path (where the next page's token is)")
        for p in (self.next_cursor_path, self.has_more_path, self.total_path):
            if p is not None:
                parse_path(p)
        return self


class FieldPaths(_Section):
    """JSON paths of each ticket field inside one ticket object (``null``: the system has no such field)."""

    id: str = "id"
    subject: str = "subject"
    body: str | None = "body"
    queue: str | None = "queue"
    priority: str | None = "priority"
    state: str | None = "state"
    created: str | None = "created_at"
    updated: str | None = "updated_at"
    #: the body is always HTML (``false``: HTML is detected from the text)
    body_is_html: bool = False
    #: more fields copied into ``Ticket.extra``: name -> JSON path
    extra: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _paths(self) -> FieldPaths:
        for name in ("id", "subject", "body", "queue", "priority", "state", "created", "updated"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_path(value)
                except JsonPathError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        for path in self.extra.values():
            parse_path(path)
        return self


class GenericRestSettings(HttpSettings):
    """``connection`` settings of ``type: generic_rest``; defaults fit the sandbox helpdesk."""

    renamed_keys: ClassVar[Mapping[str, str]] = {
        "max_connections": "max_concurrent_requests",
        "retries": "retry_attempts",
    }

    base_url: str
    auth: AuthSettings = Field(default_factory=AuthSettings)
    #: extra headers sent with every request
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(30.0, gt=0, le=600)
    max_concurrent_requests: int = Field(8, ge=1, le=256)
    #: how ``{since}`` is written: ``iso`` (2024-05-01T12:00:00Z), ``epoch`` (seconds), ``epoch_ms``,
    #: or a strftime pattern such as ``%Y-%m-%d %H:%M:%S`` (UTC)
    time_format: str = "iso"
    #: JSON path that, when present and not empty in an answer (even an HTTP 200 one), means the request
    #: failed, e.g. ``error`` or ``errors[0].message``; for ``update`` it is also matched by
    #: ``update.unknown_value_pattern``
    error_path: str | None = None
    paging: PagingSettings = Field(default_factory=lambda: PagingSettings())
    fields: FieldPaths = Field(default_factory=FieldPaths)
    list_new: ListRequest = Field(default_factory=_default_list_new)
    get_ticket: GetRequest = Field(default_factory=GetRequest)
    update: UpdateRequest = Field(default_factory=UpdateRequest)
    #: ``null``: notes go only where the update body uses ``{note}``
    add_note: NoteRequest | None = Field(default_factory=NoteRequest)
    #: reading a ticket's notes (reconciliation after a crash looks for the note's marker);
    #: ``null``: not possible, an interrupted note is then recorded as unverified and not repeated
    find_note: NoteListRequest | None = Field(default_factory=NoteListRequest)
    #: ``null``: the system cannot list resolved tickets (no learning loop)
    list_resolved: ListRequest | None = Field(
        default_factory=lambda: ListRequest(path="/tickets/resolved", since_param="resolved_since")
    )
    queues: ValueList = Field(default_factory=lambda: ValueList(path="/queues"))
    priorities: ValueList = Field(default_factory=lambda: ValueList(path="/priorities"))

    @field_validator("error_path")
    @classmethod
    def _error_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value


# --------------------------------------------------------------------------- templates

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
            return _MISSING if value is None else _convert(value, whole.group(2))
        return render_text(template, values)
    if isinstance(template, dict):
        out = {}
        for key, item in template.items():
            rendered = render_json(item, values)
            if rendered is not _MISSING:
                out[render_text(str(key), values)] = rendered
        return out
    if isinstance(template, list):
        return [r for r in (render_json(item, values) for item in template) if r is not _MISSING]
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


def parse_time(value: Any) -> datetime | None:
    """A time from ISO 8601 text or epoch seconds/milliseconds; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            return None
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return parse_time(number)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
        except ValueError:
            return None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class _Position:
    """Where the next page of a listing starts, in every paging style (serialised as a resumable cursor)."""

    page: int
    offset: int = 0
    after: str | None = None
    token: str | None = None

    def dump(self) -> str:
        return json.dumps({"page": self.page, "offset": self.offset, "after": self.after, "token": self.token})

    @classmethod
    def load(cls, text: str) -> _Position:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("page"), int):
            raise ValueError("not a paging position")
        return cls(int(data["page"]), int(data.get("offset") or 0), data.get("after"), data.get("token"))


def _paging_params(paging: PagingSettings, position: _Position, page_size: int) -> list[tuple[str, str]]:
    """The query parameters that ask for the page at ``position``."""
    if paging.style == "none":
        return []
    params = [(paging.size_param, str(page_size))] if paging.size_param else []
    if paging.style == "page":
        params.append((paging.page_param, str(position.page)))
    elif paging.style == "offset":
        params.append((paging.offset_param, str(position.offset)))
    elif paging.style == "after" and position.after is not None:
        params.append((paging.after_param, position.after))
    elif paging.style == "cursor" and position.token is not None:
        params.append((paging.cursor_param, position.token))
    return params


# --------------------------------------------------------------------------- transport


# --------------------------------------------------------------------------- adapter


class GenericRestAdapter(Adapter):
    """A helpdesk with a JSON REST API, described entirely by :class:`GenericRestSettings`."""

    settings_model = GenericRestSettings
    settings: GenericRestSettings

    def __init__(
        self,
        name: str,
        settings: AdapterSettings | Mapping[str, Any],
        *,
        source_queues: list[str],
        source_states: list[str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if isinstance(settings, Mapping):
            settings = GenericRestSettings.model_validate(settings)
        if not isinstance(settings, GenericRestSettings):
            raise TypeError(f"GenericRestAdapter needs GenericRestSettings, not {type(settings).__name__}")
        super().__init__(name, settings, source_queues=source_queues, source_states=source_states)
        s = settings
        headers = dict(s.headers)
        auth: tuple[str, str] | None = None
        self._auth_params: dict[str, str] = {}
        token = s.auth.token.get_secret_value() if s.auth.token else ""
        if s.auth.type == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        elif s.auth.type == "header":
            headers[s.auth.header or "Authorization"] = f"{s.auth.prefix}{token}"
        elif s.auth.type == "basic":
            auth = (s.auth.username or "", s.auth.password.get_secret_value() if s.auth.password else "")
        elif s.auth.type == "query":
            self._auth_params[s.auth.param or "token"] = token
        self.transport = HttpTransport.from_settings(
            s, system=name, headers=headers, auth=auth, transport=transport
        )
        f = s.fields
        self._p_id = parse_path(f.id)
        self._p_subject = parse_path(f.subject)
        self._p = {
            name: parse_path(path)
            for name, path in (
                ("body", f.body),
                ("queue", f.queue),
                ("priority", f.priority),
                ("state", f.state),
                ("created", f.created),
                ("updated", f.updated),
            )
            if path is not None
        }
        self._p_extra = {name: parse_path(path) for name, path in f.extra.items()}
        self._p_error = parse_path(s.error_path) if s.error_path is not None else None
        self.note_in_update = uses_placeholder(s.update.body, "note")

    # ------------------------------------------------------------------ helpers

    def _url(self, template: str, values: Mapping[str, Any]) -> str:
        return render_text(template, values, encode=True)

    def _params(self, template: Mapping[str, Any], values: Mapping[str, Any]) -> list[tuple[str, str]]:
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
        out.extend(self._auth_params.items())
        return out

    async def _call(
        self,
        spec: RequestTemplate,
        values: Mapping[str, Any],
        *,
        extra_params: list[tuple[str, str]] | None = None,
        write: bool = False,
    ) -> Any:
        url = self._url(spec.path, values)
        kwargs: dict[str, Any] = {"params": self._params(spec.params, values) + (extra_params or [])}
        if spec.body is not None and spec.method != "GET":
            kwargs["json"] = render_json(spec.body, values)
        if spec.headers:
            kwargs["headers"] = {k: render_text(v, values) for k, v in spec.headers.items()}
        if write and (spec.method == "POST" or uses_placeholder(spec.body, "note")):
            response = await self.transport.request_write(spec.method, url, **kwargs)
        else:
            response = await self.transport.request(spec.method, url, **kwargs)
        data = self._decode(response)
        if self._p_error is not None:
            error = get_path(data, self._p_error)
            if error not in (None, "", [], {}, False):
                text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
                exc = PermanentError(
                    f"{spec.method} {url} answered HTTP {response.status_code} with an error at "
                    f"error_path={self.settings.error_path!r}: {text[:300]}",
                    system=self.name,
                )
                exc.status_code = response.status_code
                exc.response_text = text[:4000]
                exc.at_error_path = True  # type: ignore[attr-defined]
                raise exc
        return data

    def _decode(self, response: httpx.Response) -> Any:
        """The answer's JSON; invalid UTF-8 inside it (one bad ticket) is replaced, not fatal for the page."""
        try:
            return decode_json(response, self.name)
        except ProtocolError as exc:
            if not isinstance(exc.__cause__, UnicodeDecodeError):
                raise
            try:
                data = json.loads(response.content.decode("utf-8", errors="replace"))
            except json.JSONDecodeError:
                raise exc from None
            log.debug("%s: answer of %s held invalid UTF-8; decoded with replacement", self.name, response.request.url.path)
            return data

    def _protocol(self, message: str) -> ProtocolError:
        return ProtocolError(message, system=self.name)

    def _ticket(self, item: Any, where: str) -> Ticket:
        if not isinstance(item, dict):
            raise self._protocol(f"{where}: expected a JSON object for a ticket, got {type(item).__name__}")
        ticket_id = _text(get_path(item, self._p_id))
        if not ticket_id:
            raise self._protocol(
                f"{where}: ticket has no id at fields.id={self.settings.fields.id!r} (keys: {', '.join(list(item)[:12])})"
            )
        p = self._p
        body = _text(get_path(item, p["body"])) if "body" in p else None
        return Ticket(
            id=ticket_id,
            subject=_text(get_path(item, self._p_subject)) or "",
            body=body,
            queue=_text(get_path(item, p["queue"])) if "queue" in p else None,
            priority=_text(get_path(item, p["priority"])) if "priority" in p else None,
            state=_text(get_path(item, p["state"])) if "state" in p else None,
            created_at=parse_time(get_path(item, p["created"])) if "created" in p else None,
            updated_at=parse_time(get_path(item, p["updated"])) if "updated" in p else None,
            body_is_html=self.settings.fields.body_is_html,
            extra={name: get_path(item, path) for name, path in self._p_extra.items()},
        )

    def _items(self, data: Any, spec: ListRequest, where: str) -> list[Any]:
        items = get_path(data, parse_path(spec.items), _MISSING)
        if items is _MISSING or not isinstance(items, list):
            found = type(items).__name__ if items is not _MISSING else "nothing"
            raise self._protocol(f"{where}: expected a list at items={spec.items!r}, found {found}")
        return items

    async def _pages(
        self,
        spec: ListRequest,
        values: dict[str, Any],
        filters: list[tuple[str, str]],
        page_size: int,
        where: str,
        start: _Position | None = None,
        *,
        shrinking: bool = False,
    ) -> AsyncIterator[tuple[list[Ticket], _Position | None]]:
        """Each page's tickets with the position of the next page (None after the last).

        ``shrinking``: the listing loses the tickets handed out (routed ones leave it)
        while it is read.  With ``page`` or ``offset`` paging, the later tickets then
        move forward by as many places; so after a page that brought tickets not seen
        before, the same page is asked again, and each page yields only tickets not
        seen before in this listing.  Nothing is skipped, whether tickets leave or not
        (a steady listing costs one more request per page).
        """
        paging = self.settings.paging
        position = start or _Position(page=paging.first_page)
        seen: set[str] = set()
        for _ in range(paging.max_pages):
            params = list(filters)
            page_values = {
                **values,
                "size": page_size,
                "page": position.page,
                "offset": position.offset,
                "after": position.after,
                "cursor": position.token,
            }
            if paging.send == "query":
                params += _paging_params(paging, position, page_size)
            data = await self._call(spec, page_values, extra_params=params)
            tickets = [self._ticket(item, where) for item in self._items(data, spec, where)]
            following = self._next_position(position, data, tickets, page_size)
            if shrinking:
                fresh = [t for t in tickets if t.id not in seen]
                seen.update(t.id for t in tickets)
                if fresh and following is not None and paging.style in ("page", "offset"):
                    following = position  # the same page again: handed-out tickets may have left it
                tickets = fresh
            yield tickets, following
            if following is None:
                return
            position = following
        log.warning("%s: %s stopped after paging.max_pages=%d pages", self.name, where, paging.max_pages)

    def _next_position(
        self, position: _Position, data: Any, tickets: list[Ticket], page_size: int
    ) -> _Position | None:
        paging = self.settings.paging
        if not tickets or paging.style == "none":
            return None
        seen = position.offset + len(tickets)
        if paging.has_more_path is not None:
            if not get_path(data, parse_path(paging.has_more_path)):
                return None
        elif paging.total_path is not None:
            total = get_path(data, parse_path(paging.total_path))
            if isinstance(total, int | float) and not isinstance(total, bool) and seen >= total:
                return None
        elif paging.style != "cursor" and len(tickets) < page_size:
            return None
        token = None
        if paging.style == "cursor":
            token = _text(get_path(data, parse_path(paging.next_cursor_path or "")))
            if not token or token == position.token:
                return None
        return _Position(page=position.page + 1, offset=seen, after=tickets[-1].id, token=token)

    # ------------------------------------------------------------------ Adapter API

    async def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        spec = self.settings.list_new
        since = parse_time(cursor) if cursor else None
        since_text = format_since(since, self.settings.time_format) if since else None
        filters: list[tuple[str, str]] = []
        if spec.queue_param:
            filters += [(spec.queue_param, q) for q in self.source_queues]
        if spec.state_param:
            filters += [(spec.state_param, s) for s in self.source_states]
        if spec.since_param and since_text:
            filters.append((spec.since_param, since_text))
        newest = since
        values = {
            "since": since_text,
            "queues": ",".join(self.source_queues) or None,
            "states": ",".join(self.source_states) or None,
        }
        async for tickets, _next in self._pages(spec, values, filters, page_size, "list_new", shrinking=True):
            for t in tickets:
                if t.updated_at is not None and (newest is None or t.updated_at > newest):
                    newest = t.updated_at
            yield TicketPage([t for t in tickets if self.is_candidate(t)])
        track = spec.since_param or uses_placeholder(spec.path, "since") or uses_placeholder(spec.params, "since")
        if track and newest is not None and newest != since:
            # the whole listing was handled: resume from the newest change seen
            yield TicketPage([], cursor=format_since(newest, "iso"))

    async def get_ticket(self, ticket_id: str) -> Ticket:
        spec = self.settings.get_ticket
        data = await self._call(spec, {"id": ticket_id})
        item = get_path(data, parse_path(spec.ticket), _MISSING)
        if item is _MISSING or item is None:
            raise self._protocol(f"get_ticket {ticket_id}: no ticket at ticket={spec.ticket!r} in the answer")
        return self._ticket(item, f"get_ticket {ticket_id}")

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        """The ``update`` request (with the note where its body uses ``{note}``), else the note by :meth:`add_note`."""
        values = {
            "id": ticket_id,
            "queue": change.queue,
            "priority": change.priority,
            "note": change.note,
            "subject": change.note_subject if change.note is not None else None,
        }
        if change.queue is not None or change.priority is not None or (change.note and self.note_in_update):
            try:
                await self._call(self.settings.update, values, write=True)
            except PermanentError as exc:
                raise self._classify_write_error(exc, change) from exc
        if change.note is not None and not self.note_in_update:
            await self.add_note(ticket_id, change.note, change.note_subject)

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        """The note alone: the ``update`` request where its body takes ``{note}`` (no fields), else ``add_note``."""
        s = self.settings
        values = {"id": ticket_id, "queue": None, "priority": None, "note": note, "subject": subject}
        if self.note_in_update:
            await self._call(s.update, values, write=True)
        elif s.add_note is not None:
            await self._call(s.add_note, values, write=True)
        else:
            raise PermanentError(
                f"{self.name}: no request writes notes: set connection.add_note, use {{note}} in connection.update.body, "
                "or turn the note off (note.enabled: false)",
                system=self.name,
            )

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        spec = self.settings.find_note
        if spec is None:
            raise PermanentError(
                f"{self.name}: connection.find_note is not configured: cannot tell whether the note was written",
                system=self.name,
            )
        data = await self._call(spec, {"id": ticket_id})
        items = get_path(data, parse_path(spec.items), _MISSING)
        if not isinstance(items, list):
            raise self._protocol(f"find_note {ticket_id}: expected a list at items={spec.items!r}")
        text = parse_path(spec.text)
        return any(marker in str(get_path(item, text) or "") for item in items)

    def _classify_write_error(self, exc: PermanentError, change: TicketChange) -> PermanentError:
        status = getattr(exc, "status_code", None)
        text = getattr(exc, "response_text", "") or ""
        spec = self.settings.update
        pattern_ok = spec.unknown_value_pattern is None or re.search(spec.unknown_value_pattern, text) is not None
        if getattr(exc, "at_error_path", False):
            # an error reported in the answer's body: unknown value only when the pattern says so
            is_unknown = spec.unknown_value_pattern is not None and pattern_ok
        else:
            is_unknown = status in spec.unknown_value_status and pattern_ok
        if is_unknown:
            wanted = ", ".join(
                f"{k} {v!r}" for k, v in (("queue", change.queue), ("priority", change.priority)) if v is not None
            )
            return UnknownValueError(f"the helpdesk refused {wanted} as unknown: {exc}", system=self.name)
        return exc

    async def list_resolved_tickets(
        self, since: datetime | None, cursor: str | None, page_size: int
    ) -> AsyncIterator[TicketPage]:
        spec = self.settings.list_resolved
        if spec is None:
            raise PermanentError(
                f"{self.name}: connection.list_resolved is not configured; this system cannot list resolved tickets",
                system=self.name,
            )
        since_text = format_since(since, self.settings.time_format) if since else None
        filters: list[tuple[str, str]] = []
        if spec.since_param and since_text:
            filters.append((spec.since_param, since_text))
        start: _Position | None = None
        if cursor:
            try:
                start = _Position.load(cursor)
            except (ValueError, TypeError):
                log.warning("%s: unreadable resolved-listing cursor, listing from the start", self.name)
        pages = self._pages(spec, {"since": since_text}, filters, page_size, "list_resolved", start)
        async for tickets, following in pages:
            if spec.fetch_missing_body and self.settings.fields.body is not None:
                tickets = [t if t.body is not None else await self.get_ticket(t.id) for t in tickets]
            yield TicketPage(tickets, cursor=following.dump() if following is not None else None)

    async def _value_list(self, spec: ValueList, what: str) -> list[str]:
        if spec.values is not None:
            return list(spec.values)
        assert spec.path is not None
        data = await self._call(RequestTemplate(path=spec.path, params=spec.params), {})
        items = get_path(data, parse_path(spec.items), _MISSING)
        if not isinstance(items, list):
            raise self._protocol(f"{what}: expected a list at items={spec.items!r}")
        name_path = parse_path(spec.name)
        names = [_text(get_path(item, name_path)) for item in items]
        return [n for n in names if n]

    async def list_queues(self) -> list[str]:
        return await self._value_list(self.settings.queues, "queues")

    async def list_priorities(self) -> list[str]:
        return await self._value_list(self.settings.priorities, "priorities")

    async def check_connection(self) -> None:
        spec = self.settings.queues
        if spec.values is None:
            await self.list_queues()
        else:  # nothing to list: read one page of the new-ticket listing instead
            async for _ in self.list_new_tickets(None, 1):
                break

    async def aclose(self) -> None:
        await self.transport.aclose()


__all__ = ["GenericRestAdapter", "GenericRestSettings", "get_path", "parse_path", "render_json"]
