"""The ``connection`` settings of ``type: generic_rest`` (see ``docs/generic_rest.md``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.base import AdapterSettings
from adapters.generic_rest.paths import JsonPathError, parse_path
from adapters.http import HttpSettings


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

