"""OTOBO and Znuny (and OTRS 6) through the GenericInterface REST ticket connector.

The admin imports a REST web service (``deploy/otobo/helpdesk-connector-webservice.yml``)
exposing SessionCreate, TicketSearch, TicketGet and TicketUpdate.  What this
adapter relies on, as the real system behaves:

* every operation answers **HTTP 200**, errors included:
  ``{"Error": {"ErrorCode": "TicketSearch.AuthFail", "ErrorMessage": ".."}}`` -
  so every body is checked;
* a route that the web service does not map answers HTTP 500 with a plain-text
  message (a configuration error, not an outage: never retried);
* a web service name that does not exist (names are case-sensitive) answers
  HTTP 500 with an empty body: before the web service ever answered, that is
  :class:`EndpointNotFoundError` naming the web service and URL; afterwards an
  empty 500 is an outage (transient);
* an operation that fails inside the system answers HTTP 500 with
  ``{"faultcode": "Server", "faultstring": ".."}``: TicketUpdate's
  ``Ticket queue could not be updated, ..`` (the agent lacks ``move_into`` on
  the target queue; nothing was changed) and the other ``Ticket <field> could
  not be updated`` faults are permanent for that ticket; other faults transient;
* TicketSearch returns ids only (``{"TicketID": ["1", "2"]}``, ``{}`` when
  nothing matches), has a ``Limit`` but no offset, and sorts by one column
  (tickets of the same second come in no set order) - paging is keyset paging
  on the creation (or change) time plus the ids seen at the boundary second,
  and the ids are then read in batches with one TicketGet per batch
  (``/Ticket/2,3,4``);
* new tickets are those in a source queue and state *now*, whatever their
  creation time: the listing hands out the tickets created since the stored
  position (read in batches), then the ids of the older ones that sit in a
  source queue and state (moved there, or set back to a new state, after the
  position passed them) - bare ids, so the daemon drops those it decided
  already without a read;
* a GET request's JSON body is not read: parameters go in the query string;
* ids arrive as numbers or as strings; sessions expire (``*.AuthFail``): the
  adapter logs in again once and fails with :class:`AuthenticationError` if
  the new session is refused too;
* TicketUpdate rejects an unknown queue or priority with
  ``TicketUpdate.InvalidParameter`` before changing anything
  (-> :class:`UnknownValueError`).

The standard connector has no operation that lists queues or priorities;
:meth:`list_queues` / :meth:`list_priorities` therefore return the lists given
in the settings (priorities default to the five standard ones) - see
``docs/otobo_znuny.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from adapters.base import AdapterSettings, AuthenticationError, EndpointNotFoundError, NotFoundError
from adapters.base import PermanentError, ProtocolError, Ticket, TicketChange, TicketPage, UnknownValueError
from adapters.common import parse_time
from adapters.http import HttpAdapter, HttpSettings, HttpTransport, decode_json

log = logging.getLogger(__name__)

DEFAULT_PRIORITIES: tuple[str, ...] = ("1 very low", "2 low", "3 normal", "4 high", "5 very high")
OTOBO_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_MAX_SEARCH_LIMIT = 100_000
_UNKNOWN_ROUTE_MARKERS = ("Error while determine Operation", "Could not determine Web", "Could not load web service")
#: TicketUpdate's fault when setting a ticket field failed (TicketQueueSet, ..): nothing after it ran
_FIELD_NOT_UPDATED = re.compile(r"^Ticket (\w+) could not be updated")
_SECRET_QUERY = re.compile(r"((?:SessionID|Password|UserLogin)=)[^&\s\"']*", re.IGNORECASE)


# --------------------------------------------------------------------------- logging hygiene


class _RedactCredentials(logging.Filter):
    """httpx logs request URLs at INFO; GET requests carry SessionID (or Password) in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1***", str(a)) if isinstance(a, (str, httpx.URL)) else a for a in record.args
            )
        if isinstance(record.msg, str) and ("SessionID=" in record.msg or "Password=" in record.msg):
            record.msg = _SECRET_QUERY.sub(r"\1***", record.msg)
        return True


_REDACTOR = _RedactCredentials()
for _name in ("httpx", "httpcore"):
    if _REDACTOR not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_REDACTOR)


# --------------------------------------------------------------------------- settings


class OtoboRoutes(BaseModel):
    """Route of each operation as mapped in the web service (``:TicketID`` as in the web service)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_create: str = "/Session"
    ticket_search: str = "/Ticket"
    ticket_get: str = "/Ticket/:TicketID"
    ticket_update: str = "/Ticket/:TicketID"

    @field_validator("session_create", "ticket_search", "ticket_get", "ticket_update")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a route starts with '/' (relative to the web service URL)")
        return value

    @field_validator("ticket_get", "ticket_update")
    @classmethod
    def _has_ticket_id(cls, value: str) -> str:
        if ":TicketID" not in value and "{TicketID}" not in value:
            raise ValueError("the route must contain :TicketID")
        return value


class OtoboZnunySettings(HttpSettings):
    """``connection`` settings of an OTOBO / Znuny / OTRS system."""

    renamed_keys: ClassVar[Mapping[str, str]] = {"max_concurrency": "max_concurrent_requests"}

    #: the web service URL, e.g. https://host/otobo/nph-genericinterface.pl/Webservice/HelpdeskConnector
    #: (Znuny and OTRS: https://host/otrs/nph-genericinterface.pl/Webservice/HelpdeskConnector)
    base_url: str
    #: the daemon's agent login and password (``password_file`` reads it from a file)
    user_login: str
    password: SecretStr
    #: "session": SessionCreate once, then SessionID (default); "per_request": UserLogin+Password on each call
    auth: Literal["session", "per_request"] = "session"
    routes: OtoboRoutes = Field(default_factory=OtoboRoutes)
    #: every queue that exists (Admin -> Queues); the connector cannot list queues, so
    #: check-config --online verifies the mapping against this list.  Unset: the queues seen
    #: on tickets the agent can read (partial) plus the source queues.
    queues: list[str] | None = None
    #: every priority that exists (Admin -> Priorities)
    priorities: list[str] = Field(default_factory=lambda: list(DEFAULT_PRIORITIES))
    #: state types that count as resolved for the export
    resolved_state_types: list[str] = Field(default_factory=lambda: ["closed"])
    #: the time zone of the system's timestamps (OTOBOTimeZone / OTRSTimeZone; UTC by default)
    time_zone: str = "UTC"
    #: ``Limit`` of one TicketSearch (the system's own default cap is 500)
    search_limit: int = Field(500, ge=1, le=10000)
    #: ticket ids read with one TicketGet call (``/Ticket/1,2,3``)
    get_batch_size: int = Field(20, ge=1, le=200)
    #: articles read per ticket (oldest first) to find the first customer message
    article_limit: int = Field(5, ge=1, le=100)
    #: tickets read to discover queue names when ``queues`` is unset
    queue_discovery_limit: int = Field(200, ge=0, le=5000)
    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


# --------------------------------------------------------------------------- transport


class FieldNotUpdatedError(PermanentError):
    """TicketUpdate could not set one field of this ticket (HTTP 500 fault); nothing was changed."""

    def __init__(self, message: str, *, field: str, system: str | None = None) -> None:
        super().__init__(message, system=system)
        self.field = field


class _OtoboTransport(HttpTransport):
    """HttpTransport that knows the OTOBO specifics of HTTP 500 answers.

    * A 500 whose text says the route maps to no operation is a configuration
      error: :class:`EndpointNotFoundError`, never retried; so is an empty 500
      before the web service ever answered (an unknown web service name).
    * A 500 fault ``Ticket <field> could not be updated`` is
      :class:`FieldNotUpdatedError` (permanent for that ticket).
    * Writes are retried only when the request surely was not applied (429, 503,
      connection refused), so a note is never added twice.
    """

    #: whether the web service ever answered (then an empty 500 is an outage, not a wrong name)
    answered = False

    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await super()._send_once(method, url, **kwargs)
        self.answered = True
        return response

    def raise_for_response(self, response: httpx.Response) -> None:
        if response.status_code == 500:
            self._raise_for_500(response)
        super().raise_for_response(response)

    def _raise_for_500(self, response: httpx.Response) -> None:
        text = response.text.strip()
        if any(m in text for m in _UNKNOWN_ROUTE_MARKERS):
            raise EndpointNotFoundError(
                f"{response.request.method} {response.request.url.copy_with(query=None)}: the web service maps no "
                f"operation to this route/method (HTTP 500: {text[:160]}); check "
                "connection.base_url and connection.routes against the web service's RouteOperationMapping",
                system=self.system,
            )
        if not text and not self.answered:
            base = str(self.client.base_url).rstrip("/")
            name = base.rsplit("/", 1)[-1]
            raise EndpointNotFoundError(
                f"web service {name!r} not found at {base} (HTTP 500 with an empty body; web service names are "
                "case-sensitive: check connection.base_url against Admin -> Web Services)",
                system=self.system,
            )
        try:
            fault = json.loads(text).get("faultstring") if text.startswith("{") else None
        except (ValueError, AttributeError):
            fault = None
        found = _FIELD_NOT_UPDATED.match(str(fault or ""))
        if found:
            field = found.group(1).lower()
            raise FieldNotUpdatedError(
                f"{response.request.method} {response.request.url.copy_with(query=None)} answered HTTP 500: {fault} "
                f"(nothing was changed; {_field_hint(field, response.request)})",
                field=field,
                system=self.system,
            )


# --------------------------------------------------------------------------- cursors


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Keyset position: everything up to (``time``, ``id``) was handed out.

    ``time`` is the OTOBO timestamp string the search bound uses (creation time
    for new tickets, last change for resolved ones); ``ids`` are the tickets
    already handed out *at exactly that second* (the bound is inclusive).
    """

    time: str | None = None
    ids: tuple[int, ...] = ()

    def encode(self) -> str:
        return json.dumps({"v": 1, "time": self.time, "ids": list(self.ids)}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> _Cursor:
        """The stored cursor; an unreadable one restarts the listing (decided tickets are skipped anyway)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if isinstance(data, int):  # a bare ticket id
                return cls(None, (data,))
            time = data.get("time")
            if time is not None and not isinstance(time, str):
                raise TypeError("time is not a string")
            return cls(time, tuple(int(i) for i in data.get("ids", ())))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring an unreadable cursor %r (%s); listing from the start", text[:80], exc)
            return cls()

    def advanced(self, time: str | None, ticket_id: int) -> _Cursor:
        if time is None:
            return _Cursor(self.time, tuple(sorted(set(self.ids) | {ticket_id})))
        if self.time is None or time > self.time:
            return _Cursor(time, (ticket_id,))
        if time == self.time:
            return _Cursor(time, tuple(sorted(set(self.ids) | {ticket_id})))
        return self

    def seen(self, time: str | None, ticket_id: int) -> bool:
        """Whether a ticket with this timestamp was handed out already."""
        if self.time is None:
            return ticket_id in self.ids
        if time is None:
            return False
        return time < self.time or (time == self.time and ticket_id in self.ids)


# --------------------------------------------------------------------------- adapter


def _as_int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"ticket id {value!r} is not a number") from exc


def _ids(values: Iterable[Any]) -> list[int]:
    return [_as_int(v) for v in values]


def _bare(ticket_id: int) -> Ticket:
    """A ticket known by its id only (``body`` None: the daemon reads it if it has not decided it)."""
    return Ticket(id=str(ticket_id), subject="", body=None, queue=None, priority=None)


class OtoboZnunyAdapter(HttpAdapter):
    """OTOBO / Znuny / OTRS through the GenericInterface REST ticket connector."""

    #: TicketUpdate takes the fields and the note (Article) in one request
    note_in_update = True
    settings_model: ClassVar[type[AdapterSettings]] = OtoboZnunySettings
    transport_class = _OtoboTransport

    def __init__(self, name: str, settings: AdapterSettings | Mapping[str, Any], **options: Any) -> None:
        """``options``: those of :class:`HttpAdapter` (source queues and states, transport, retry)."""
        super().__init__(name, settings, **options)
        self.cfg: OtoboZnunySettings = self.settings
        self.tz = ZoneInfo(self.cfg.time_zone)
        self._session_id: str | None = None
        self._login_lock = asyncio.Lock()
        self.logins = 0

    # ------------------------------------------------------------------ plumbing

    def _route(self, route: str, ticket_ids: Iterable[int] | None = None) -> str:
        if ticket_ids is None:
            return route
        joined = ",".join(str(i) for i in ticket_ids)
        value = quote(joined, safe=",")
        return route.replace(":TicketID", value).replace("{TicketID}", value)

    async def _login(self, stale: str | None) -> str:
        async with self._login_lock:
            if self._session_id is not None and self._session_id != stale:
                return self._session_id  # another task logged in meanwhile
            self._session_id = None
            body = {"UserLogin": self.cfg.user_login, "Password": self.cfg.password.get_secret_value()}
            async with self.slots:
                response = await self.http.request("POST", self.cfg.routes.session_create, json=body)
            data = decode_json(response, self.name)
            self._raise_for_error(data, "SessionCreate")
            session_id = data.get("SessionID") if isinstance(data, dict) else None
            if not session_id:
                raise ProtocolError(f"SessionCreate answered no SessionID: {str(data)[:120]}", system=self.name)
            self.logins += 1
            self._session_id = str(session_id)
            log.debug("%s: logged in as %s", self.name, self.cfg.user_login)
            return self._session_id

    async def _credentials(self) -> tuple[dict[str, str], str | None]:
        if self.cfg.auth == "per_request":
            return {"UserLogin": self.cfg.user_login, "Password": self.cfg.password.get_secret_value()}, None
        session_id = self._session_id or await self._login(None)
        return {"SessionID": session_id}, session_id

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One operation call with credentials; log in again once when the session expired."""
        for attempt in (1, 2):
            creds, session_used = await self._credentials()
            async with self.slots:
                if method == "GET":
                    query = _query({**(params or {}), **creds})
                    response = await self.http.request(method, path, params=query)
                else:
                    payload = {**creds, **(body or {})}
                    response = await self.http.request_write(method, path, json=payload)
            data = decode_json(response, self.name)
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise ProtocolError(f"{operation} answered {type(data).__name__}, not an object", system=self.name)
            error = data.get("Error")
            if isinstance(error, dict) and str(error.get("ErrorCode", "")).endswith(".AuthFail"):
                if attempt == 1 and self.cfg.auth == "session":
                    log.debug("%s: %s refused the session, logging in again", self.name, operation)
                    await self._login(session_used)
                    continue
            self._raise_for_error(data, operation)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for_error(self, data: Any, operation: str) -> None:
        if not isinstance(data, dict) or "Error" not in data:
            return
        error = data["Error"] if isinstance(data["Error"], dict) else {"ErrorMessage": str(data["Error"])}
        code = str(error.get("ErrorCode") or f"{operation}.Error")
        text = str(error.get("ErrorMessage") or "")
        message = f"{operation}: {code}: {text}"
        if code.endswith(".AuthFail"):
            raise AuthenticationError(
                f"{message} (login {self.cfg.user_login!r} rejected; check user_login/password and that the agent is valid)",
                system=self.name,
            )
        if code.endswith(".AccessDenied"):
            if "permissions to" not in text:
                # "User does not have access to the ticket!": gone, or moved where the agent cannot read
                raise NotFoundError(f"{message} (the ticket does not exist or the agent lacks 'ro' on its queue)", system=self.name)
            # "Does not have permissions to update queue!" etc.: a right is missing on the ticket's queue
            raise AuthenticationError(
                f"{message} (the daemon's agent needs 'rw' on the source queues - TicketUpdate checks 'note', "
                "'move' and 'priority' on the ticket's queue - and 'ro' + 'move_into' on the target queues)",
                system=self.name,
            )
        if code in ("TicketGet.NotValidTicketID", "TicketGet.NotTicketData"):
            raise NotFoundError(message, system=self.name)
        if code.endswith(".InvalidParameter") and re.search(r"Queue|Priority", text):
            raise UnknownValueError(message, system=self.name)
        raise PermanentError(message, system=self.name)

    # ------------------------------------------------------------------ conversion

    def _parse_time(self, value: Any) -> datetime | None:
        return parse_time(value, self.tz) if isinstance(value, str) else None

    def _format_time(self, value: datetime) -> str:
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(self.tz).strftime(OTOBO_TIME_FORMAT)

    def _to_ticket(self, raw: Mapping[str, Any], *, with_articles: bool = True) -> Ticket:
        articles = raw.get("Article") or []
        if isinstance(articles, dict):
            articles = [articles]
        first = next((a for a in articles if str(a.get("SenderType", "")).lower() == "customer"), None)
        if first is None and articles:
            first = articles[0]
        # read with articles but none there: an empty body, not "unknown" (no second read)
        body: str | None = "" if with_articles else None
        is_html = False
        if first is not None:
            body = str(first.get("Body") or "")
            ctype = str(first.get("ContentType") or first.get("MimeType") or "").lower()
            is_html = ctype.startswith("text/html")
        title = str(raw.get("Title") or "") or (str(first.get("Subject") or "") if first else "")
        ticket_id = _as_int(raw.get("TicketID"))
        return Ticket(
            id=str(ticket_id),
            subject=title,
            body=body,
            queue=raw.get("Queue"),
            priority=raw.get("Priority"),
            state=raw.get("State"),
            created_at=self._parse_time(raw.get("Created")),
            updated_at=self._parse_time(raw.get("Changed")),
            body_is_html=is_html,
            extra={
                "ticket_number": raw.get("TicketNumber"),
                "queue_id": raw.get("QueueID"),
                "priority_id": raw.get("PriorityID"),
                "state_type": raw.get("StateType"),
                "created": raw.get("Created"),
                "changed": raw.get("Changed"),
                "article_id": first.get("ArticleID") if first else None,
            },
        )

    # ------------------------------------------------------------------ operations

    async def _search(self, params: Mapping[str, Any]) -> list[int]:
        data = await self._call("TicketSearch", "GET", self.cfg.routes.ticket_search, params=params)
        ids = data.get("TicketID") or []
        if not isinstance(ids, list):
            ids = [ids]
        return _ids(ids)

    async def _get_batch(self, ticket_ids: list[int], *, articles: bool = True) -> list[Ticket]:
        params: dict[str, Any] = {}
        if articles:
            params.update(AllArticles=1, ArticleLimit=self.cfg.article_limit, ArticleOrder="ASC")
        data = await self._call("TicketGet", "GET", self._route(self.cfg.routes.ticket_get, ticket_ids), params=params)
        raw = data.get("Ticket") or []
        if isinstance(raw, dict):
            raw = [raw]
        return [self._to_ticket(t, with_articles=articles) for t in raw]

    async def _get_many(self, ticket_ids: list[int], *, articles: bool = True) -> list[Ticket]:
        """Read tickets in batches (concurrently, bounded); skip tickets gone since the search."""
        size = self.cfg.get_batch_size
        batches = [ticket_ids[i : i + size] for i in range(0, len(ticket_ids), size)]

        async def one(batch: list[int]) -> list[Ticket]:
            try:
                return await self._get_batch(batch, articles=articles)
            except NotFoundError:
                if len(batch) == 1:
                    log.debug("%s: ticket %s vanished since the search", self.name, batch[0])
                    return []
                # one id of the batch is gone (deleted, merged away, moved out of reach): read singly
                out: list[Ticket] = []
                for ticket_id in batch:
                    out.extend(await one([ticket_id]))
                return out

        results = await asyncio.gather(*(one(b) for b in batches))
        by_id = {int(t.id): t for chunk in results for t in chunk}
        return [by_id[i] for i in ticket_ids if i in by_id]

    async def _keyset_pages(
        self,
        base_params: Mapping[str, Any],
        time_param: str,
        time_field: str,
        cursor: _Cursor,
        page_size: int,
        *,
        immutable_time: bool,
    ) -> AsyncIterator[TicketPage]:
        """Search, read and yield pages in (time, id) order, resuming after ``cursor``."""
        limit = self.cfg.search_limit
        while True:
            params = dict(base_params, Limit=limit)
            if cursor.time:
                # the system's bound is inclusive (``>=``): the boundary second is read again
                params[time_param] = cursor.time
            ids = await self._search(params)
            full = len(ids) >= limit
            start = cursor
            if immutable_time:
                # a creation time never moves: tickets handed out at the boundary second need no re-read
                ids = [i for i in ids if i not in start.ids]
            # (a change time moves: a reopened and closed again ticket must come back, so
            # boundary tickets are read again and dropped only if their timestamp is unchanged)
            progressed = False
            for offset in range(0, len(ids), page_size):
                chunk = ids[offset : offset + page_size]
                tickets = await self._get_many(chunk)
                fresh = []
                for ticket in tickets:
                    stamp = ticket.extra.get(time_field)
                    if start.seen(stamp, int(ticket.id)):
                        continue
                    fresh.append(ticket)
                fresh.sort(key=lambda t: (t.extra.get(time_field) or "", int(t.id)))
                for ticket in fresh:
                    cursor = cursor.advanced(ticket.extra.get(time_field), int(ticket.id))
                if fresh:
                    progressed = True
                    yield TicketPage(fresh, cursor.encode())
            if not full:
                return
            if progressed:
                limit = self.cfg.search_limit
            elif limit < _MAX_SEARCH_LIMIT:
                # a full result without a new ticket: more tickets share one second than the
                # limit holds (a bulk import); the search has no offset, so ask for more at once
                limit = min(limit * 2, _MAX_SEARCH_LIMIT)
            else:
                log.warning(
                    "%s: more than %d tickets share the timestamp %s; some are skipped this poll",
                    self.name,
                    _MAX_SEARCH_LIMIT,
                    cursor.time,
                )
                return

    def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        return self._new_pages(_Cursor.decode(cursor), page_size)

    async def _new_pages(self, start: _Cursor, page_size: int) -> AsyncIterator[TicketPage]:
        """Tickets created since ``start`` (read, advancing the cursor), then the older candidates (ids)."""
        params: dict[str, Any] = {"SortBy": "Age", "OrderBy": "Up"}
        if self.source_queues:
            params["Queues"] = list(self.source_queues)
        if self.source_states:
            params["States"] = list(self.source_states)
        pages = self._keyset_pages(
            params, "TicketCreateTimeNewerDate", "created", start, page_size, immutable_time=True
        )
        async for page in pages:
            yield page
        if start.time is not None:
            async for page in self._older_candidates(params, start.time, page_size):
                yield page

    async def _older_candidates(
        self, base: Mapping[str, Any], position: str, page_size: int
    ) -> AsyncIterator[TicketPage]:
        """Ids of the tickets created before ``position``'s second that are candidates now.

        They entered a source queue or state after the position passed them (or
        were handed out and decided before: the daemon drops those unread).
        Keyset paging on the creation time: robust while tickets leave the
        listing; one small TicketGet per full search learns where to go on.
        """
        try:
            before = datetime.strptime(position, OTOBO_TIME_FORMAT) - timedelta(seconds=1)
        except ValueError:
            return
        params = dict(base, TicketCreateTimeOlderDate=before.strftime(OTOBO_TIME_FORMAT))
        seen: set[int] = set()
        limit = self.cfg.search_limit
        while True:
            ids = await self._search(dict(params, Limit=limit))
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            for offset in range(0, len(fresh), page_size):
                yield TicketPage([_bare(i) for i in fresh[offset : offset + page_size]])
            if len(ids) < limit:
                return
            newest = await self._newest_created(ids)
            if newest is None:
                return
            params["TicketCreateTimeNewerDate"] = newest  # inclusive: the second's other tickets come too
            if fresh:
                limit = self.cfg.search_limit
            elif limit < _MAX_SEARCH_LIMIT:
                limit = min(limit * 2, _MAX_SEARCH_LIMIT)  # more tickets in one second than the limit holds
            else:
                return

    async def _newest_created(self, ids: list[int]) -> str | None:
        """The creation time of the last of ``ids`` (sorted by age), or of the newest still readable."""
        for chunk in (ids[-1:], ids):
            tickets = await self._get_many(chunk, articles=False)
            stamps = [t.extra["created"] for t in tickets if t.extra.get("created")]
            if stamps:
                return max(stamps)
        return None

    def list_resolved_tickets(self, since: datetime | None, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        position = _Cursor.decode(cursor)
        if since is not None:
            bound = self._format_time(since)
            if position.time is None or bound > position.time:
                position = _Cursor(bound, ())
        params: dict[str, Any] = {"StateType": list(self.cfg.resolved_state_types), "SortBy": "Changed", "OrderBy": "Up"}
        return self._keyset_pages(
            params, "TicketLastChangeTimeNewerDate", "changed", position, page_size, immutable_time=False
        )

    async def get_ticket(self, ticket_id: str) -> Ticket:
        tickets = await self._get_batch([_as_int(ticket_id)])
        if not tickets:
            raise NotFoundError(f"TicketGet returned no ticket {ticket_id}", system=self.name)
        return tickets[0]

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        if change.is_empty:
            return
        body: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        hint = []
        if change.queue is not None:
            key = "QueueID" if change.queue.isdigit() else "Queue"
            fields[key] = int(change.queue) if key == "QueueID" else change.queue
            hint.append(f"queue {change.queue!r}")
        if change.priority is not None:
            key = "PriorityID" if change.priority.isdigit() else "Priority"
            fields[key] = int(change.priority) if key == "PriorityID" else change.priority
            hint.append(f"priority {change.priority!r}")
        if fields:
            body["Ticket"] = fields
        if change.note is not None:
            body["Article"] = self._internal_article(change.note, change.note_subject)
        path = self._route(self.cfg.routes.ticket_update, [_as_int(ticket_id)])
        try:
            await self._call("TicketUpdate", "PATCH", path, body=body)
        except UnknownValueError as exc:
            raise UnknownValueError(
                f"{exc} (ticket {ticket_id}: {', '.join(hint)}; check the routing map against the system)",
                system=self.name,
            ) from exc

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        """TicketUpdate with an Article only (the same request :meth:`update_ticket` sends with the fields)."""
        await self.update_ticket(ticket_id, TicketChange(note=note, note_subject=subject))

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        """TicketGet with every article (newest first): whether one's body contains ``marker``."""
        params = {"AllArticles": 1, "ArticleOrder": "DESC"}
        path = self._route(self.cfg.routes.ticket_get, [_as_int(ticket_id)])
        data = await self._call("TicketGet", "GET", path, params=params)
        raw = data.get("Ticket") or []
        for ticket in [raw] if isinstance(raw, dict) else raw:
            articles = (ticket.get("Article") if isinstance(ticket, dict) else None) or []
            for article in [articles] if isinstance(articles, dict) else articles:
                if isinstance(article, dict) and marker in str(article.get("Body") or ""):
                    return True
        return False

    @staticmethod
    def _internal_article(note: str, subject: str) -> dict[str, Any]:
        """A TicketUpdate ``Article``: an internal note, not visible to the customer."""
        return {
            "CommunicationChannel": "Internal",
            "IsVisibleForCustomer": 0,
            "SenderType": "agent",
            "Subject": subject or "helpdesk-connector",
            "Body": note,
            "ContentType": "text/plain; charset=utf8",
        }

    async def list_queues(self) -> list[str]:
        """The configured ``queues``; unset, the queues that provably exist (partial).

        The ticket connector has no operation that lists queues, and a search
        for an unknown queue simply finds nothing.  Without a configured list,
        the queues of the most recently changed tickets the agent can read are
        returned, plus each source queue that holds at least one ticket (in any
        state): an existing but empty queue is missing from this list.
        """
        await self.check_connection()
        if self.cfg.queues is not None:
            return list(self.cfg.queues)
        log.warning(
            "%s: connection.queues is not set; the queue list is discovered from tickets and may miss empty queues",
            self.name,
        )
        found: set[str] = set()
        if self.cfg.queue_discovery_limit:
            ids = await self._search({"SortBy": "Changed", "OrderBy": "Down", "Limit": self.cfg.queue_discovery_limit})
            for ticket in await self._get_many(ids, articles=False):
                if ticket.queue:
                    found.add(ticket.queue)
        for queue in self.source_queues:
            if queue not in found and await self._search({"Queues": queue, "Limit": 1}):
                found.add(queue)
        return sorted(found)

    async def list_priorities(self) -> list[str]:
        return list(self.cfg.priorities)

    async def check_connection(self) -> None:
        """Log in (session mode) and run one small search: proves URL, routes and credentials."""
        params: dict[str, Any] = {"Limit": 1}
        if self.source_queues:
            params["Queues"] = list(self.source_queues)
        await self._search(params)



def _field_hint(field: str, request: httpx.Request) -> str:
    """What to grant or check when TicketUpdate could not set ``field`` (the target from the request sent)."""
    if field != "queue":
        return f"OTOBO could not set the ticket's {field}; its system log (Admin -> System Log) says why"
    try:
        sent = json.loads(request.content or b"{}")
    except ValueError:
        sent = {}
    fields = sent.get("Ticket") if isinstance(sent, dict) else None
    target = (fields.get("Queue") or fields.get("QueueID")) if isinstance(fields, dict) else None
    return (
        f"the daemon's agent needs 'move_into' (and 'ro') on the target queue {target!r}: "
        "Admin -> Agents <-> Groups, or the agent's role"
    )


def _query(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query string pairs; lists repeat the key (OTOBO turns repeated keys into arrays)."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend((key, str(v)) for v in values)
    return out
