"""Request Tracker 5 through its REST2 API (``<url>/REST/2.0/``).

Calls per routed ticket are kept few, because each REST2 call costs RT a few
hundred milliseconds of CPU:

* listing: one TicketSQL search per page (``GET /tickets`` with the query in
  the query string, every needed field and ``fields[Queue]=Name``); pages are
  walked by ``id > <last id>`` so tickets that leave the result set while we
  route them do not shift the pages;
* body: one ``GET /ticket/N/attachments`` limited to the text parts of the
  first message; bodies never change, so they are cached by ticket id;
* the first :meth:`get_ticket` after a listing reuses the listed fields (they
  are seconds old) and only reads the body; every later :meth:`get_ticket` —
  the pipeline's re-read just before writing — is one fresh search by id;
* write: one ``PUT /ticket/N`` (queue and priority) and one
  ``POST /ticket/N/comment`` (the internal note, :meth:`add_note`; RT has no
  request that does both, so ``note_in_update`` is false);
* looking for a note (reconciliation only, :meth:`find_note`): the ticket's
  text attachments, newest first, searched for the note's marker.

RT answers ``PUT /ticket/N`` with HTTP 200 and a list of messages even when a
change fails (``["Ticket 2: Queue Nope does not exist"]``); the messages are
checked, and when they are not recognised the ticket is re-read to verify.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

from adapters.base import AdapterSettings, AuthenticationError, NotFoundError, PermanentError, ProtocolError
from adapters.base import Ticket, TicketChange, TicketPage, UnknownValueError
from adapters.common import BodyCache, parse_time
from adapters.http import HttpAdapter, HttpSettings, token_or_basic

log = logging.getLogger(__name__)

#: RT's way of saying "no date"
UNSET_DATE = "1970-01-01T00:00:00Z"
#: RT caps per_page at 100
MAX_PAGE = 100
#: the ticket fields every search asks for
TICKET_FIELDS = "Subject,Status,Queue,Priority,Created,LastUpdated,Resolved,Creator"
#: the widest timezone offset; TicketSQL dates are read in the RT user's timezone
_TZ_SLACK = timedelta(hours=14)


class RequestTrackerSettings(HttpSettings):
    """``connection`` settings of a ``type: request_tracker`` system."""

    renamed_keys: ClassVar[Mapping[str, str]] = {"url": "base_url"}

    #: RT's base URL (with its web path, if any), e.g. ``https://rt.example.com`` or ``https://host/rt``
    base_url: HttpUrl  # type: ignore[assignment]
    #: a REST2 auth token (RT: Logged in as > Settings > Auth Tokens); or ``token_file``
    token: SecretStr | None = None
    #: HTTP basic auth instead of a token; ``password_file`` also works
    username: str | None = None
    password: SecretStr | None = None
    #: TicketSQL selecting the new tickets; default: ``source.queues`` and ``source.states``
    query: str | None = None
    #: statuses that count as resolved for the export of training data
    resolved_statuses: list[str] = Field(default_factory=lambda: ["resolved"])
    #: the priority range the mapping may write (RT's default is 0..100)
    min_priority: int = 0
    max_priority: int = 100
    ca_file: str | None = None
    #: how many tickets' bodies are kept in memory (bodies never change in RT)
    body_cache_size: int = Field(5000, ge=0)
    #: how long a listed ticket's fields may stand in for the first read of that ticket
    listing_reuse_seconds: float = Field(60.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _no_rest_suffix(cls, value: HttpUrl) -> HttpUrl:
        if str(value).rstrip("/").endswith("/REST/2.0"):
            raise ValueError("give RT's base URL without /REST/2.0 (it is added)")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> RequestTrackerSettings:
        if self.token is None and (self.username is None or self.password is None):
            raise ValueError("set either token (or token_file) or username and password (or password_file)")
        if self.token is not None and self.username is not None:
            raise ValueError("set either token or username/password, not both")
        if self.min_priority > self.max_priority:
            raise ValueError("min_priority is greater than max_priority")
        return self

    @property
    def api_url(self) -> str:
        return str(self.base_url).rstrip("/") + "/REST/2.0/"


# --------------------------------------------------------------------------- small helpers


def ticketsql_quote(value: str) -> str:
    """``value`` as a TicketSQL string literal (quotes and backslashes escaped)."""
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError(f"control characters are not allowed in TicketSQL values: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in_clause(field: str, values: Iterable[str]) -> str:
    values = list(values)
    if len(values) == 1:
        return f"{field} = {ticketsql_quote(values[0])}"
    return "(" + " OR ".join(f"{field} = {ticketsql_quote(v)}" for v in values) + ")"


def parse_rt_date(value: Any) -> datetime | None:
    """An RT date (``2024-05-01T10:00:00Z``) as an aware datetime; unset dates are None."""
    if not isinstance(value, str) or value == UNSET_DATE:
        return None
    parsed = parse_time(value)
    return None if parsed is None or parsed.year <= 1970 else parsed


def _sql_date(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _str_id(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("id")
    if value is None or value == "":
        raise ProtocolError(f"RT returned an object without an id: {value!r}")
    return str(value)


def _ref_name(value: Any) -> str | None:
    """The Name of an expanded reference (``{"id": .., "Name": ..}``), or a plain string."""
    if isinstance(value, Mapping):
        name = value.get("Name")
        return str(name) if name not in (None, "") else None
    if value in (None, ""):
        return None
    return str(value)


def _priority_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return str(int(str(value).strip()))
    except ValueError:
        return str(value)


_MESSAGE_PREFIX = re.compile(r"^Ticket \d+:\s*")
_SUCCESS = re.compile(r"^\S+ changed from .* to |^\S+ set to ", re.I)
_UNKNOWN = re.compile(r"does not exist|doesn't exist|not found|no such|unknown|illegal value|invalid", re.I)
_DENIED = re.compile(r"permission denied|not allowed|may not|no permission", re.I)
_FAILED = re.compile(r"\bcould not\b|\bcouldn't\b|\bfailed\b|\bcannot\b|\bcan't\b|\berror\b", re.I)


def classify_update_messages(messages: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split RT's answer to ``PUT /ticket/N`` into (succeeded, failed, unrecognised) messages."""
    ok: list[str] = []
    failed: list[str] = []
    unknown: list[str] = []
    for raw in messages:
        message = _MESSAGE_PREFIX.sub("", str(raw)).strip()
        if not message:
            continue
        if _SUCCESS.search(message):
            ok.append(message)
        elif _UNKNOWN.search(message) or _DENIED.search(message) or _FAILED.search(message):
            failed.append(message)
        else:
            unknown.append(message)
    return ok, failed, unknown


# --------------------------------------------------------------------------- the adapter


class RequestTrackerAdapter(HttpAdapter):
    """Request Tracker 5 (REST2)."""

    settings_model: ClassVar[type[AdapterSettings]] = RequestTrackerSettings

    def __init__(self, name: str, settings: AdapterSettings | Mapping[str, Any], **options: Any) -> None:
        """``options``: those of :class:`HttpAdapter` (source queues and states, transport, retry)."""
        super().__init__(name, settings, **options)
        settings = self.rt = self.settings
        self._bodies = BodyCache(settings.body_cache_size)
        #: tickets from the last listing, each usable once as the first read (id -> (ticket, item, when))
        self._listed: dict[str, tuple[Ticket, Mapping[str, Any], float]] = {}
        self._queues: set[str] | None = None
        self._queues_lock = asyncio.Lock()

    def credentials(self, settings: RequestTrackerSettings) -> tuple[dict[str, str], tuple[str, str] | None]:
        token = settings.token.get_secret_value() if settings.token is not None else None
        return token_or_basic(settings, None if token is None else f"token {token}")

    def api_url(self, settings: RequestTrackerSettings) -> str:
        return settings.api_url

    def tls_verify(self, settings: RequestTrackerSettings) -> str | None:
        return settings.ca_file or None

    # ------------------------------------------------------------------ queries

    def new_tickets_query(self) -> str:
        """The TicketSQL selecting new tickets."""
        if self.rt.query:
            return self.rt.query
        parts = []
        if self.source_queues:
            parts.append(_in_clause("Queue", self.source_queues))
        if self.source_states:
            parts.append(_in_clause("Status", self.source_states))
        return " AND ".join(parts) if parts else "id > 0"

    def resolved_query(self, since: datetime | None) -> str:
        parts = [_in_clause("Status", self.rt.resolved_statuses)]
        if since is not None:
            # TicketSQL reads dates in the RT user's timezone, which we do not know:
            # ask with 14 h of slack and filter exactly on the UTC dates RT returns.
            parts.append(f"Resolved > {ticketsql_quote(_sql_date(since - _TZ_SLACK))}")
        return " AND ".join(parts)

    async def _search(self, query: str, after_id: int, per_page: int) -> list[dict[str, Any]]:
        params = {
            "query": f"({query}) AND id > {after_id}",
            "fields": TICKET_FIELDS,
            "fields[Queue]": "Name",
            "orderby": "id",
            "order": "ASC",
            "per_page": str(per_page),
            "page": "1",
        }
        data = await self.http.json("GET", "tickets", params=params)
        if not isinstance(data, Mapping) or not isinstance(data.get("items"), list):
            raise ProtocolError(f"GET /tickets answered {type(data).__name__} without 'items'", system=self.name)
        return [item for item in data["items"] if isinstance(item, Mapping)]

    async def _pages(self, query: str, after_id: int, page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        per_page = max(1, min(page_size, MAX_PAGE))
        while True:
            items = await self._search(query, after_id, per_page)
            if not items:
                return
            yield items
            after_id = max(int(_str_id(i)) for i in items)
            if len(items) < per_page:
                return

    def _ticket(self, item: Mapping[str, Any], body: tuple[str, bool] | None = None) -> Ticket:
        resolved = parse_rt_date(item.get("Resolved"))
        return Ticket(
            id=_str_id(item),
            subject=str(item.get("Subject") or ""),
            body=body[0] if body is not None else None,
            body_is_html=body[1] if body is not None else False,
            queue=_ref_name(item.get("Queue")),
            priority=_priority_text(item.get("Priority")),
            state=str(item["Status"]) if item.get("Status") else None,
            created_at=parse_rt_date(item.get("Created")),
            updated_at=parse_rt_date(item.get("LastUpdated")),
            extra={"resolved_at": resolved} if resolved is not None else {},
        )

    @staticmethod
    def _origin(item: Mapping[str, Any]) -> tuple[datetime | None, str | None]:
        creator = item.get("Creator")
        return parse_rt_date(item.get("Created")), (str(_str_id(creator)) if creator else None)

    # ------------------------------------------------------------------ listing

    async def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        """Every ticket matching the query, oldest first; the pipeline drops decided ones.

        The cursor is not used: a ticket that enters the source queue later (moved
        there by a person) must still be found, whatever its id.
        """
        query = self.new_tickets_query()
        async for items in self._pages(query, 0, page_size):
            now = time.monotonic()
            self._listed = {}
            tickets = []
            for item in items:
                ticket_id = _str_id(item)
                cached = self._bodies.get(ticket_id)
                ticket = self._ticket(item, cached)
                if cached is None:
                    self._listed[ticket_id] = (ticket, item, now)
                tickets.append(ticket)
            yield TicketPage(tickets, cursor=None)

    async def list_resolved_tickets(
        self, since: datetime | None, cursor: str | None, page_size: int
    ) -> AsyncIterator[TicketPage]:
        """Resolved tickets (oldest id first) with their body and final queue and priority.

        The cursor is the last ticket id handed out, so an interrupted export resumes.
        """
        after = 0
        if cursor:
            try:
                after = int(cursor)
            except ValueError:
                raise PermanentError(f"invalid export cursor {cursor!r} for Request Tracker", system=self.name) from None
        since_utc = since.astimezone(UTC) if since is not None and since.tzinfo else (
            since.replace(tzinfo=UTC) if since is not None else None
        )
        async for items in self._pages(self.resolved_query(since), after, page_size):
            keep = []
            for item in items:
                resolved = parse_rt_date(item.get("Resolved"))
                if since_utc is not None and (resolved is None or resolved <= since_utc):
                    continue
                keep.append(item)
            bodies = await self._bodies_for([(_str_id(i), i) for i in keep])
            tickets = [self._ticket(i, bodies[_str_id(i)]) for i in keep]
            yield TicketPage(tickets, cursor=str(max(int(_str_id(i)) for i in items)))

    async def _bodies_for(self, items: list[tuple[str, Mapping[str, Any]]]) -> dict[str, tuple[str, bool]]:

        async def one(ticket_id: str, item: Mapping[str, Any]) -> tuple[str, tuple[str, bool]]:
            async with self.slots:
                return ticket_id, await self._body(ticket_id, *self._origin(item))

        return dict(await asyncio.gather(*(one(tid, item) for tid, item in items)))

    # ------------------------------------------------------------------ one ticket

    async def _fresh(self, ticket_id: str) -> Mapping[str, Any]:
        numeric = self._numeric_id(ticket_id)
        params = {"query": f"id = {numeric}", "fields": TICKET_FIELDS, "fields[Queue]": "Name"}
        data = await self.http.json("GET", "tickets", params=params)
        items = data.get("items") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise ProtocolError("GET /tickets answered without 'items'", system=self.name)
        for item in items:
            if isinstance(item, Mapping) and _str_id(item) == str(numeric):
                return item
        raise NotFoundError(f"ticket {ticket_id} does not exist or the RT user may not see it", system=self.name)

    def _numeric_id(self, ticket_id: str) -> int:
        try:
            value = int(str(ticket_id))
        except ValueError:
            raise NotFoundError(f"{ticket_id!r} is not a Request Tracker ticket id", system=self.name) from None
        if value <= 0:
            raise NotFoundError(f"{ticket_id!r} is not a Request Tracker ticket id", system=self.name)
        return value

    async def get_ticket(self, ticket_id: str) -> Ticket:
        """The ticket with its first message.  The first read after a listing reuses the listed fields."""
        ticket_id = str(ticket_id)
        listed = self._listed.pop(ticket_id, None)
        if listed is not None and time.monotonic() - listed[2] <= self.rt.listing_reuse_seconds:
            ticket = listed[0]
            body = await self._body(ticket_id, *self._origin(listed[1]))
            return Ticket(
                id=ticket.id, subject=ticket.subject, body=body[0], body_is_html=body[1], queue=ticket.queue,
                priority=ticket.priority, state=ticket.state, created_at=ticket.created_at,
                updated_at=ticket.updated_at, extra=dict(ticket.extra),
            )
        cached = self._bodies.get(ticket_id)
        item = await self._fresh(ticket_id)
        body = cached if cached is not None else await self._body(ticket_id, *self._origin(item))
        return self._ticket(item, body)

    async def _body(self, ticket_id: str, created: datetime | None, creator: str | None) -> tuple[str, bool]:
        """(text, is_html) of the ticket's first message, from one call; cached."""
        cached = self._bodies.get(ticket_id)
        if cached is not None:
            return cached
        numeric = self._numeric_id(ticket_id)
        params = _attachment_params("text/", "ContentType,Content,TransactionId,Filename,Created,Creator", "ASC", 6)
        data = await self.http.json("GET", f"ticket/{numeric}/attachments", params=params)
        items = [i for i in (data.get("items") or []) if isinstance(i, Mapping)] if isinstance(data, Mapping) else []
        body = ("", False)
        if items:
            first_txn = min(int(_str_id({"id": i.get("TransactionId")})) for i in items)
            parts = [i for i in items if str(i.get("TransactionId")) == str(first_txn) and not i.get("Filename")]
            if parts and await self._is_create(numeric, first_txn, parts[0], created, creator):
                body = _pick_body(parts)
        self._bodies.put(ticket_id, body)
        return body

    async def _is_create(
        self, numeric: int, txn_id: int, part: Mapping[str, Any], created: datetime | None, creator: str | None
    ) -> bool:
        """Whether ``txn_id`` is the ticket's Create transaction (not a later reply, note or autoreply).

        The Create transaction's parts carry the ticket's creator and creation time;
        only when they do not (a ticket created without text) is the history asked.
        """
        part_created = parse_rt_date(part.get("Created"))
        part_creator = part.get("Creator")
        same_creator = creator is not None and part_creator is not None and str(_str_id(part_creator)) == creator
        if (
            same_creator
            and created is not None
            and part_created is not None
            and abs((part_created - created).total_seconds()) <= 1
        ):
            return True
        data = await self.http.json(
            "GET", f"ticket/{numeric}/history", params={"fields": "Type", "orderby": "id", "per_page": "1"}
        )
        items = data.get("items") if isinstance(data, Mapping) else None
        if not items:
            return False
        return str(items[0].get("id")) == str(txn_id)

    # ------------------------------------------------------------------ writing

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        """``PUT /ticket/N`` (queue, priority), then the internal note; raise if RT refused any of it."""
        numeric = self._numeric_id(ticket_id)
        fields: dict[str, Any] = {}
        if change.queue is not None:
            await self._require_queue(change.queue)
            fields["Queue"] = change.queue
        if change.priority is not None:
            fields["Priority"] = self._priority_value(change.priority)
        if fields:
            response = await self.http.request("PUT", f"ticket/{numeric}", json=fields)
            messages = _message_list(response, self.name)
            ok, failed, unknown = classify_update_messages(messages)
            if failed:
                self._raise_refused(ticket_id, fields, failed)
            if unknown or len(ok) < len(fields):
                await self._verify(ticket_id, fields, messages)
        if change.note is not None:
            await self.add_note(ticket_id, change.note, change.note_subject)

    def _priority_value(self, priority: str) -> int:
        try:
            value = int(str(priority).strip())
        except ValueError:
            raise UnknownValueError(
                f"priority {priority!r} is not a number; Request Tracker priorities are numbers "
                f"({self.rt.min_priority}..{self.rt.max_priority}): map labels to numbers",
                system=self.name,
            ) from None
        if not self.rt.min_priority <= value <= self.rt.max_priority:
            raise UnknownValueError(
                f"priority {value} is outside {self.rt.min_priority}..{self.rt.max_priority}", system=self.name
            )
        return value

    async def _require_queue(self, queue: str) -> None:
        """Refuse a queue RT does not have before writing anything (the list is read once, and again on a miss)."""
        if self._queues is None or queue not in self._queues:
            async with self._queues_lock:
                if self._queues is None or queue not in self._queues:
                    self._queues = set(await self.list_queues())
        if queue not in self._queues:
            raise UnknownValueError(
                f"queue {queue!r} does not exist in Request Tracker or its user lacks SeeQueue on it", system=self.name
            )

    def _raise_refused(self, ticket_id: str, fields: Mapping[str, Any], failed: list[str]) -> None:
        text = "; ".join(failed)
        message = f"RT refused to change ticket {ticket_id} ({', '.join(f'{k}={v!r}' for k, v in fields.items())}): {text}"
        if any(_DENIED.search(m) for m in failed):
            raise PermanentError(
                message + " (the RT user needs ModifyTicket on the ticket's queue and CreateTicket on the target queue)",
                system=self.name,
            )
        if any(_UNKNOWN.search(m) for m in failed):
            raise UnknownValueError(message, system=self.name)
        raise PermanentError(message, system=self.name)

    async def _verify(self, ticket_id: str, fields: Mapping[str, Any], messages: list[str]) -> None:
        """Re-read the ticket when RT's messages were not conclusive (another language, say)."""
        item = await self._fresh(ticket_id)
        current = {"Queue": _ref_name(item.get("Queue")), "Priority": _priority_text(item.get("Priority"))}
        wrong = [k for k, v in fields.items() if current.get(k) != (str(v) if k == "Priority" else v)]
        if wrong:
            raise PermanentError(
                f"RT did not apply {', '.join(wrong)} to ticket {ticket_id}: {'; '.join(map(str, messages)) or 'no message'}",
                system=self.name,
            )

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        """``POST /ticket/N/comment``; resent by the transport only when RT surely did not get it."""
        numeric = self._numeric_id(ticket_id)
        payload = {"Subject": subject, "Content": note, "ContentType": "text/plain"}
        try:
            await self.http.request_write("POST", f"ticket/{numeric}/comment", json=payload)
        except PermanentError as exc:
            if isinstance(exc, (NotFoundError, AuthenticationError)):
                raise
            raise PermanentError(
                f"RT refused the note on ticket {numeric}: {exc} (the RT user needs CommentOnTicket)",
                system=self.name,
            ) from exc

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        """Whether a text part of the ticket's messages (comments included) contains ``marker``; newest first."""
        numeric = self._numeric_id(ticket_id)
        params = _attachment_params("text/plain", "Content", "DESC", MAX_PAGE)
        page = 1
        while True:
            data = await self.http.json("GET", f"ticket/{numeric}/attachments", params={**params, "page": str(page)})
            items = data.get("items") if isinstance(data, Mapping) else None
            if not isinstance(items, list):
                raise ProtocolError(f"GET /ticket/{numeric}/attachments answered without 'items'", system=self.name)
            if any(isinstance(i, Mapping) and marker in str(i.get("Content") or "") for i in items):
                return True
            if len(items) < MAX_PAGE:
                return False
            page += 1

    # ------------------------------------------------------------------ metadata

    async def list_queues(self) -> list[str]:
        names: list[str] = []
        page = 1
        while True:
            data = await self.http.json(
                "GET", "queues/all", params={"fields": "Name", "per_page": str(MAX_PAGE), "page": str(page)}
            )
            items = data.get("items") if isinstance(data, Mapping) else None
            if not isinstance(items, list):
                raise ProtocolError("GET /queues/all answered without 'items'", system=self.name)
            names.extend(str(i["Name"]) for i in items if isinstance(i, Mapping) and i.get("Name"))
            if len(items) < MAX_PAGE:
                break
            page += 1
        self._queues = set(names)
        return names

    async def list_priorities(self) -> list[str]:
        return [str(n) for n in range(self.rt.min_priority, self.rt.max_priority + 1)]

    async def check_connection(self) -> None:
        """One authenticated call that also proves REST2 is there (not a login page)."""
        data = await self.http.json("GET", "rt")
        if not isinstance(data, Mapping) or "Version" not in data:
            raise ProtocolError(f"{self.rt.api_url}rt did not answer like RT's REST2 API", system=self.name)
        await self.list_queues()



def _pick_body(parts: list[Mapping[str, Any]]) -> tuple[str, bool]:
    """Plain text if the first message has it, else its HTML (marked as such)."""
    plain = [p for p in parts if str(p.get("ContentType", "")).lower().startswith("text/plain")]
    html = [p for p in parts if str(p.get("ContentType", "")).lower().startswith("text/html")]
    chosen, is_html = (plain[0], False) if plain else ((html[0], True) if html else (parts[0], False))
    return str(chosen.get("Content") or ""), is_html


def _message_list(response: httpx.Response, system: str) -> list[str]:
    try:
        data = response.json() if response.content else []
    except ValueError as exc:
        raise ProtocolError(f"PUT {response.request.url.path} answered something that is not JSON", system=system) from exc
    if isinstance(data, list):
        return [str(m) for m in data]
    if isinstance(data, Mapping) and "message" in data:
        return [str(data["message"])]
    raise ProtocolError(f"PUT {response.request.url.path} answered {type(data).__name__}, not a list of messages", system=system)


def decode_attachment_content(item: Mapping[str, Any]) -> str:
    """The text of an ``/attachment/N`` answer, whose Content is base64."""
    raw = item.get("Content")
    if not raw:
        return ""
    data = base64.b64decode(str(raw))
    return data.decode("utf-8", errors="replace")


def _attachment_params(content_type: str, fields: str, order: str, per_page: int) -> dict[str, str]:
    """Query of ``GET /ticket/N/attachments``: the parts whose ContentType is like ``content_type``, by id."""
    return {
        "query": f'[{{"field":"ContentType","operator":"LIKE","value":"{content_type}"}}]',
        "fields": fields,
        "orderby": "id",
        "order": order,
        "per_page": str(per_page),
    }
