"""Zammad through its REST API v1.

What this adapter relies on, as the real system behaves (see ``docs/zammad.md``):

* auth is ``Authorization: Token token=<token>`` (an agent's access token),
  ``Bearer <token>`` (OAuth2) or HTTP basic; the token is sent in a header only
  and never logged;
* new tickets come from the search, ``GET /api/v1/tickets/search?query=..
  &expand=true&sort_by=created_at&order_by=asc&page=1&per_page=..``.  The
  query defaults to the source groups and states, e.g.
  ``state.name:"new" AND (group.name:"Incoming" OR group.name:"Sales \\"EU\\"")``
  (values quoted and escaped), or is given whole in the settings;
* new tickets are those in a source group and state *now*, whatever their
  creation time: the search is keyed on ``updated_at`` (moving a ticket into
  a group, or setting it back to new, updates it).  A hit created before the
  listing's starting position is handed out bare (no body): the daemon drops
  the ids it decided already (a suggestion note also updates a ticket) without
  reading them, and reads the others;
* the search runs on Elasticsearch, which **lags** behind the database: a
  ticket created a moment ago may be missing from the hits while a newer one
  is already there.  Paging is therefore keyset paging on that timestamp
  (each page is a fresh query ``updated_at:["<last seen>" TO *]``, which also
  keeps the place when routed tickets drop out of the result), and the cursor
  that is kept between polls never moves past ``now - search_index_lag``
  (``now`` from the server's ``Date`` header): tickets of that window are
  asked for again next time, and those already handed out are remembered in
  the cursor so they are not handed out twice;
* the hits carry the *current* data (the index only decides which tickets
  match), so a hit that is no longer a candidate (moved meanwhile) is dropped;
* the text is the first customer article of
  ``GET /api/v1/ticket_articles/by_ticket/{id}``; ``content_type`` tells
  whether the body is HTML;
* a write is one ``PUT /api/v1/tickets/{id}`` with ``group`` / ``priority``
  names and the internal note as ``article`` (Zammad applies it atomically:
  an unknown name gives 422 ``No lookup value found for 'group': ".."`` ->
  :class:`UnknownValueError`, and nothing is written); a note alone is
  ``POST /api/v1/ticket_articles``.  Writes are retried only when the request
  surely did not reach Zammad (429, connection refused), never after a timeout
  or a 5xx, so a note is never added twice; reconciliation looks for a note
  by its marker in ``GET /api/v1/ticket_articles/by_ticket/{id}``;
* errors are JSON ``{"error": .., "error_human": ..}`` with 401/403/404/422;
  429 (from a proxy or Rack::Attack; ``Retry-After`` is honoured when present);
* ``GET /api/v1/groups`` needs ``admin.group``; an agent without it lists its
  own groups from ``GET /api/v1/users/me?expand=true``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.base import AdapterSettings, AuthenticationError, NotFoundError, PermanentError, ProtocolError
from adapters.base import Ticket, TicketChange, TicketPage, UnknownValueError
from adapters.common import BodyCache, parse_time
from adapters.http import HttpAdapter, HttpSettings, HttpTransport, error_for_status, token_or_basic

log = logging.getLogger(__name__)

API = "/api/v1"
#: Zammad's own ceilings: paginate_with(max: 200) on search, max: 100 on the plain index
SEARCH_MAX_PER_PAGE = 200
LIST_MAX_PER_PAGE = 100
BODY_CACHE_SIZE = 4096
CURSOR_VERSION = 1


# --------------------------------------------------------------------------- settings


class ZammadSettings(HttpSettings):
    """``connection`` settings of a ``type: zammad`` system."""

    renamed_keys: ClassVar[Mapping[str, str]] = {"url": "base_url"}

    #: base URL of the Zammad instance, e.g. https://helpdesk.example.com
    base_url: str
    #: an access token of the daemon's agent (Profile > Token Access) - or token_file
    token: SecretStr | None = None
    #: how the token is sent: "token" (``Token token=..``, access tokens) or "bearer" (OAuth2)
    token_type: Literal["token", "bearer"] = "token"
    #: HTTP basic instead of a token (discouraged by Zammad; may be disabled there)
    username: str | None = None
    password: SecretStr | None = None
    #: how new tickets are found: "search" (Elasticsearch, the default) or "list" (the plain paged
    #: ticket list, read in id order and filtered here - for a Zammad without Elasticsearch)
    listing: Literal["search", "list"] = "search"
    #: the whole Zammad search query for new tickets; default: built from source queues (groups) and states
    query: str | None = None
    #: states that count as resolved, for the training export
    resolved_states: list[str] = Field(default_factory=lambda: ["closed"])
    #: the whole search query for resolved tickets; default: built from resolved_states
    resolved_query: str | None = None
    #: seconds the search index may lag behind the database; the cursor never passes now minus this
    search_index_lag: float = Field(300.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _no_api_suffix(cls, value: str) -> str:
        if value.endswith("/api/v1"):
            value = value[: -len("/api/v1")]
        return value

    @field_validator("resolved_states")
    @classmethod
    def _some_states(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one state")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> ZammadSettings:
        has_token = self.token is not None and bool(self.token.get_secret_value())
        has_basic = self.username is not None or self.password is not None
        if has_token and has_basic:
            raise ValueError("give either token (or token_file) or username/password, not both")
        if not has_token and not has_basic:
            raise ValueError("give token (or token_file), or username and password")
        if has_basic and (not self.username or self.password is None):
            raise ValueError("basic auth needs both username and password (or password_file)")
        return self


# --------------------------------------------------------------------------- query language


def quote_value(value: str) -> str:
    """A value as a quoted phrase of the search query language (Elasticsearch query_string)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def any_of(field_name: str, values: Sequence[str]) -> str:
    terms = [f"{field_name}:{quote_value(v)}" for v in values]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def build_query(groups: Sequence[str], states: Sequence[str]) -> str:
    """``state.name:"new" AND (group.name:"A" OR group.name:"B")``; ``*`` when nothing restricts it."""
    parts = []
    if states:
        parts.append(any_of("state.name", states))
    if groups:
        parts.append(any_of("group.name", groups))
    return " AND ".join(parts) if parts else "*"


def format_time(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _lower_bound(after: datetime | None, since: datetime | None) -> datetime | None:
    """Where a listing starts: the cursor's position, or ``since`` when that is later."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    if since is not None and (after is None or since > after):
        return since
    return after


def _kept_after(newest: datetime | None, horizon: datetime, done: bool) -> datetime | None:
    """The position the kept cursor may move to.

    Never past the index-lag horizon, nor past the newest ticket seen (a ticket
    with that same timestamp may still be further on); a scan that found nothing
    at all may move up to the horizon, as everything older than that is indexed
    and did not match.
    """
    if newest is not None:
        return min(newest, horizon)
    return horizon if done else None


def since_clause(field_name: str, since: datetime) -> str:
    return f"{field_name}:[{quote_value(format_time(since))} TO *]"


# --------------------------------------------------------------------------- cursor


@dataclass
class _Cursor:
    """Where the next listing starts: ``after`` (inclusive) and the ids at or after it already handed out."""

    after: datetime | None = None
    seen: dict[int, datetime] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "after": format_time(self.after) if self.after else None,
                "seen": [[tid, format_time(ts)] for tid, ts in sorted(self.seen.items())],
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None, system: str) -> _Cursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
                raise ValueError("unknown cursor version")
            after = parse_time(data.get("after")) if data.get("after") else None
            seen: dict[int, datetime] = {}
            for tid, ts in data.get("seen") or []:
                parsed = parse_time(ts)
                if parsed is not None:
                    seen[int(tid)] = parsed
            return cls(after, seen)
        except (ValueError, TypeError) as exc:
            log.warning("%s: ignoring an unreadable Zammad cursor (%s); listing from the start", system, exc)
            return cls()

    def moved_to(self, after: datetime | None, handed_out: Mapping[int, datetime]) -> _Cursor:
        """The cursor with ``after`` (never moving back) and only the handed-out ids not before it."""
        if self.after is not None and (after is None or after < self.after):
            after = self.after
        seen = {tid: ts for tid, ts in handed_out.items() if after is None or ts >= after}
        return _Cursor(after, seen)


# --------------------------------------------------------------------------- transport


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an adapter error (None: no answer came)."""
    return getattr(exc, "status_code", None)


def _error_text(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict):
        text = data.get("error_human") or data.get("error")
        return str(text) if text else None
    return None


class _ZammadTransport(HttpTransport):
    """HttpTransport with Zammad's error bodies, the status kept on the error, and safe retries for writes."""

    #: only a 429 proves Zammad refused the call; a 503 may come after the change was made
    not_applied_statuses = frozenset({429})

    def raise_for_response(self, response: httpx.Response) -> None:
        status = response.status_code
        text = _error_text(response)
        where = f"{response.request.method} {response.request.url.copy_with(query=None).path}"
        if status == 422 and text and text.startswith("No lookup value found"):
            raise UnknownValueError(f"{where} answered HTTP 422: {text}", system=self.system)
        if text and status in (401, 403, 404, 422):
            cls = {401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError}.get(status, PermanentError)
            raise cls(f"{where} answered HTTP {status}: {text}", system=self.system)
        error_for_status(response, self.system)


# --------------------------------------------------------------------------- adapter


class ZammadAdapter(HttpAdapter):
    """Zammad REST API v1 (see the module docstring for the behaviour relied on)."""

    #: fields and note in one ``PUT /tickets/{id}`` (Zammad applies both or neither)
    note_in_update = True
    settings_model: ClassVar[type[AdapterSettings]] = ZammadSettings
    transport_class = _ZammadTransport

    def __init__(self, name: str, settings: AdapterSettings | Mapping[str, Any], **options: Any) -> None:
        """``options``: those of :class:`HttpAdapter` (source queues and states, transport, retry)."""
        super().__init__(name, settings, **options)
        settings = self.cfg = self.settings
        #: ticket id -> (body, is_html) of its first customer article, which does not change: the re-read
        #: just before a write then costs one call instead of two
        self._bodies = BodyCache(BODY_CACHE_SIZE)
        self.new_query = settings.query or build_query(self.source_queues, self.source_states)
        self.resolved_query = settings.resolved_query or build_query([], settings.resolved_states)

    def credentials(self, settings: ZammadSettings) -> tuple[dict[str, str], tuple[str, str] | None]:
        secret = settings.token.get_secret_value() if settings.token is not None else ""
        scheme = "Token token=" if settings.token_type == "token" else "Bearer "
        return token_or_basic(settings, scheme + secret if secret else None)

    # ------------------------------------------------------------------ calls

    async def _get(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[Any, httpx.Response]:
        async with self.slots:
            response = await self.http.request("GET", API + path, params=params)
        return self._json(response), response

    async def _write(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        async with self.slots:
            response = await self.http.request_write(method, API + path, json=body)
        return self._json(response)

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            ctype = response.headers.get("Content-Type", "?")
            raise ProtocolError(
                f"{response.request.method} {response.request.url.path} answered {ctype} that is not JSON",
                system=self.name,
            ) from exc

    @staticmethod
    def _server_now(response: httpx.Response) -> datetime:
        """The server's clock (Date header), so that index lag is measured on Zammad's time."""
        date = response.headers.get("Date")
        if date:
            try:
                parsed = email.utils.parsedate_to_datetime(date)
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=timezone.utc)
                return parsed
            except (TypeError, ValueError):
                pass
        return datetime.fromtimestamp(time.time(), tz=timezone.utc)

    # ------------------------------------------------------------------ tickets

    def _ticket_id(self, ticket_id: str | int) -> int:
        try:
            return int(str(ticket_id).strip())
        except ValueError:
            raise NotFoundError(f"{ticket_id!r} is not a Zammad ticket id", system=self.name) from None

    def _row_id(self, row: Any) -> int:
        """The numeric id of a listed ticket (Zammad sends numbers; digits as text are accepted)."""
        try:
            return int(str(row["id"]))
        except (TypeError, KeyError, ValueError):
            raise ProtocolError(f"a listed ticket has no numeric id: {str(row)[:80]}", system=self.name) from None

    def _to_ticket(self, raw: Any, body: str | None = None, body_is_html: bool = False) -> Ticket:
        if not isinstance(raw, Mapping) or "id" not in raw:
            raise ProtocolError(f"expected a ticket object, got {type(raw).__name__}", system=self.name)
        if "group" not in raw and "group_id" in raw:
            raise ProtocolError("the ticket came without names (expand=true was not honoured)", system=self.name)
        return Ticket(
            id=str(raw["id"]),
            subject=str(raw.get("title") or ""),
            body=body,
            queue=raw.get("group"),
            priority=raw.get("priority"),
            state=raw.get("state"),
            created_at=parse_time(raw.get("created_at")),
            updated_at=parse_time(raw.get("updated_at")),
            body_is_html=body_is_html,
            extra={
                k: raw.get(k)
                for k in ("number", "group_id", "priority_id", "state_id", "customer_id", "owner_id", "article_count")
                if k in raw
            },
        )

    @staticmethod
    def _from_customer(article: Mapping[str, Any]) -> bool:
        sender = article.get("sender")
        if sender is not None:
            return str(sender).lower() == "customer"
        return article.get("sender_id") == 2  # Zammad's fixed id of the "Customer" sender

    async def _body(self, ticket_id: int) -> tuple[str, bool]:
        """The first customer message (text, is_html)."""
        cached = self._bodies.get(ticket_id)
        if cached is not None:
            return cached
        articles, _ = await self._get(f"/ticket_articles/by_ticket/{ticket_id}")
        if not isinstance(articles, list):
            raise ProtocolError(f"articles of ticket {ticket_id}: expected a list", system=self.name)
        articles = sorted((a for a in articles if isinstance(a, Mapping)), key=lambda a: int(a.get("id") or 0))
        public = [a for a in articles if not a.get("internal")]
        chosen = next((a for a in public if self._from_customer(a)), None)
        chosen = chosen or (public[0] if public else (articles[0] if articles else None))
        if chosen is None:
            return "", False
        is_html = str(chosen.get("content_type") or "").lower().startswith("text/html")
        result = str(chosen.get("body") or ""), is_html
        if self._from_customer(chosen):
            self._bodies.put(ticket_id, result)
        return result

    async def _with_body(self, raw: Mapping[str, Any]) -> Ticket | None:
        try:
            body, is_html = await self._body(self._row_id(raw))
        except NotFoundError:
            return None  # deleted (or moved out of our groups) between search and read
        return self._to_ticket(raw, body, is_html)

    async def get_ticket(self, ticket_id: str) -> Ticket:
        tid = self._ticket_id(ticket_id)
        raw, _ = await self._get(f"/tickets/{tid}", {"expand": "true"})
        body, is_html = await self._body(tid)
        return self._to_ticket(raw, body, is_html)

    async def _search(self, query: str, sort_by: str, page: int, per_page: int) -> tuple[list[Any], datetime]:
        params = {
            "query": query,
            "expand": "true",
            "sort_by": sort_by,
            "order_by": "asc",
            "page": page,
            "per_page": per_page,
        }
        data, response = await self._get("/tickets/search", params)
        if isinstance(data, Mapping) and isinstance(data.get("records"), list):  # with_total_count form
            data = data["records"]
        if not isinstance(data, list):
            raise ProtocolError(
                f"ticket search answered {type(data).__name__}, not a list of expanded tickets", system=self.name
            )
        return data, self._server_now(response)

    async def _keyset_pages(
        self,
        base_query: str,
        key: str,
        cursor: str | None,
        page_size: int,
        *,
        since: datetime | None = None,
        candidates_only: bool,
    ) -> AsyncIterator[TicketPage]:
        """Keyset paging on ``key`` with the index-lag-safe cursor (see the module docstring)."""
        start = _Cursor.decode(cursor, self.name)
        lower = _lower_bound(start.after, since)
        per_page = max(1, min(page_size, SEARCH_MAX_PER_PAGE))
        lag = timedelta(seconds=self.cfg.search_index_lag)
        handed_out: dict[int, datetime] = dict(start.seen)
        scan_from, page_no = lower, 1
        newest: datetime | None = None
        last_cursor = cursor
        while True:
            query = base_query if scan_from is None else f"({base_query}) AND {since_clause(key, scan_from)}"
            rows, server_now = await self._search(query, key, page_no, per_page)
            keys, fresh = self._fresh_rows(rows, key, handed_out, lower)
            if keys:
                newest = max(keys) if newest is None else max(newest, *keys)
            older = start.after if candidates_only else None
            tickets = await self._hand_out(fresh, older, handed_out, candidates_only=candidates_only)
            done = len(rows) < per_page
            next_cursor = start.moved_to(_kept_after(newest, server_now - lag, done), handed_out).encode()
            if tickets or (done and next_cursor != last_cursor):
                yield TicketPage(tickets, next_cursor)
                last_cursor = next_cursor
            if done:
                return
            page_max = max(keys)
            if scan_from is None or page_max > scan_from:
                scan_from, page_no = page_max, 1
            elif not tickets:
                # a whole page of one timestamp, all handed out before: step over it.  (After a page
                # that handed out tickets the same page is asked again: routed ones leave the result
                # and the rest of that timestamp moves up.)
                page_no += 1

    def _fresh_rows(
        self, rows: list[Mapping[str, Any]], key: str, handed_out: Mapping[int, datetime], lower: datetime | None
    ) -> tuple[list[datetime], list[tuple[Mapping[str, Any], datetime]]]:
        """The ``key`` time of every hit, and the hits not handed out before nor older than ``lower``."""
        keys: list[datetime] = []
        fresh: list[tuple[Mapping[str, Any], datetime]] = []
        for row in rows:
            row_id = self._row_id(row)
            stamp = parse_time(row.get(key))
            if stamp is None:
                raise ProtocolError(f"ticket {row_id} has no {key}", system=self.name)
            keys.append(stamp)
            if row_id in handed_out or (lower is not None and stamp < lower):
                continue
            fresh.append((row, stamp))
        return keys, fresh

    async def _hand_out(
        self,
        fresh: list[tuple[Mapping[str, Any], datetime]],
        older: datetime | None,
        handed_out: dict[int, datetime],
        *,
        candidates_only: bool,
    ) -> list[Ticket]:
        """The tickets of the fresh hits (read with their bodies), noted in ``handed_out``."""
        listed = [(self._to_ticket(row), row, stamp) for row, stamp in fresh]
        if candidates_only:
            # the index may be stale: the hit's current data decides
            listed = [item for item in listed if self.is_candidate(item[0])]
        read = await asyncio.gather(*(self._listed(ticket, row, older) for ticket, row, _ in listed))
        tickets = [t for t in read if t]
        got = {t.id for t in tickets}
        for _, row, stamp in listed:
            if str(row["id"]) in got:
                handed_out[self._row_id(row)] = stamp
        return tickets

    async def _listed(self, ticket: Ticket, row: Mapping[str, Any], older: datetime | None) -> Ticket | None:
        """A hit with its body; bare (body None) when created before ``older`` (maybe decided before)."""
        created = parse_time(row.get("created_at"))
        if older is not None and created is not None and created < older:
            return ticket
        return await self._with_body(row)

    async def _list_pages(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        """New tickets from ``GET /api/v1/tickets?expand=true`` (id order, offset pages), filtered here.

        The cursor is the highest id read and its page.  The list has no "after id" filter, so a
        listing restarts one page before that page and skips the ids it has passed.  After a page
        that handed out tickets the same page is read again: routed tickets may leave the list
        (a group the agent cannot read) and shift the later ones back.
        """
        last_id, last_page = 0, 1
        if cursor:
            try:
                data = json.loads(cursor)
                last_id, last_page = int(data["list"]["last_id"]), int(data["list"]["page"])
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("%s: ignoring an unreadable Zammad cursor (%s); listing from the start", self.name, exc)
        per_page = max(1, min(page_size, LIST_MAX_PER_PAGE))
        page_no = max(1, last_page - 1)
        last_cursor = cursor
        while True:
            rows, _ = await self._get("/tickets", {"expand": "true", "page": page_no, "per_page": per_page})
            if not isinstance(rows, list):
                raise ProtocolError(f"ticket list answered {type(rows).__name__}, not a list", system=self.name)
            fresh = []
            for row in rows:
                if self._row_id(row) > last_id:
                    fresh.append(row)
            listed = [row for row in fresh if self.is_candidate(self._to_ticket(row))]
            tickets = [t for t in await asyncio.gather(*(self._with_body(row) for row in listed)) if t]
            if fresh:
                last_id, last_page = max(self._row_id(row) for row in fresh), page_no
            next_cursor = json.dumps({"v": CURSOR_VERSION, "list": {"last_id": last_id, "page": last_page}},
                                     separators=(",", ":"))
            done = len(rows) < per_page
            if tickets or (done and next_cursor != last_cursor):
                yield TicketPage(tickets, next_cursor)
                last_cursor = next_cursor
            if done:
                return
            if not tickets:
                page_no += 1

    def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        if self.cfg.listing == "list":
            return self._list_pages(cursor, page_size)
        return self._keyset_pages(self.new_query, "updated_at", cursor, page_size, candidates_only=True)

    def list_resolved_tickets(
        self, since: datetime | None, cursor: str | None, page_size: int
    ) -> AsyncIterator[TicketPage]:
        return self._keyset_pages(
            self.resolved_query, "updated_at", cursor, page_size, since=since, candidates_only=False
        )

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        """One ``PUT /tickets/{id}`` with the fields and the note as ``article``; a note alone is :meth:`add_note`."""
        if change.is_empty:
            return
        tid = self._ticket_id(ticket_id)
        fields: dict[str, Any] = {}
        if change.queue is not None:
            fields["group"] = change.queue
        if change.priority is not None:
            fields["priority"] = change.priority
        if not fields:
            assert change.note is not None
            await self.add_note(ticket_id, change.note, change.note_subject)
            return
        if change.note is not None:
            fields["article"] = _article(change.note, change.note_subject)
        result = await self._write("PUT", f"/tickets/{tid}", fields)
        if not isinstance(result, Mapping) or "id" not in result:
            raise ProtocolError(f"ticket {tid}: the update answered no ticket", system=self.name)

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        tid = self._ticket_id(ticket_id)
        result = await self._write("POST", "/ticket_articles", {"ticket_id": tid, **_article(note, subject)})
        if not isinstance(result, Mapping) or "id" not in result:
            raise ProtocolError(f"ticket {tid}: the note was not created", system=self.name)

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        tid = self._ticket_id(ticket_id)
        articles, _ = await self._get(f"/ticket_articles/by_ticket/{tid}")
        if not isinstance(articles, list):
            raise ProtocolError(f"articles of ticket {tid}: expected a list", system=self.name)
        return any(isinstance(a, Mapping) and marker in str(a.get("body") or "") for a in articles)

    # ------------------------------------------------------------------ lists

    async def list_queues(self) -> list[str]:
        try:
            groups, _ = await self._get("/groups")
        except AuthenticationError as exc:
            if http_status(exc) != 403:
                raise
            # listing all groups needs admin.group; an agent sees its own groups on its profile
            me, _ = await self._get("/users/me", {"expand": "true"})
            names = me.get("groups") if isinstance(me, Mapping) else None
            if not isinstance(names, Mapping):
                raise ProtocolError("users/me?expand=true answered no groups", system=self.name) from exc
            return sorted(str(n) for n in names)
        if not isinstance(groups, list):
            raise ProtocolError("groups: expected a list", system=self.name)
        return [str(g["name"]) for g in groups if isinstance(g, Mapping) and g.get("active", True)]

    async def list_priorities(self) -> list[str]:
        rows, _ = await self._get("/ticket_priorities")
        if not isinstance(rows, list):
            raise ProtocolError("ticket_priorities: expected a list", system=self.name)
        return [str(p["name"]) for p in rows if isinstance(p, Mapping) and p.get("active", True)]

    async def list_states(self) -> list[str]:
        rows, _ = await self._get("/ticket_states")
        if not isinstance(rows, list):
            raise ProtocolError("ticket_states: expected a list", system=self.name)
        return [str(s["name"]) for s in rows if isinstance(s, Mapping) and s.get("active", True)]

    async def check_connection(self) -> None:
        me, _ = await self._get("/users/me")
        if not isinstance(me, Mapping) or "id" not in me:
            raise ProtocolError("users/me answered no user", system=self.name)



def _article(note: str, subject: str) -> dict[str, Any]:
    """An internal note as Zammad's article attributes."""
    return {"subject": subject, "body": note, "content_type": "text/plain", "type": "note", "internal": True}
