"""A local stand-in for OTOBO / Znuny's GenericInterface REST ticket connector.

Written for this project from the official documentation of the operations
(SessionCreate, TicketSearch, TicketGet, TicketUpdate) and the REST transport,
and from facts checked against a real OTOBO 11.  It keeps what an adapter
meets in the real system:

* the path ``/otobo/nph-genericinterface.pl/Webservice/<Name>/<route>`` (Znuny:
  ``/otrs/...``); routes resolved like the REST transport does (operations in
  name order, first match wins, ``:Name`` placeholders); an unmatched route or
  method answers **HTTP 500** with a plain-text message;
* every operation answers **HTTP 200**, errors as
  ``{"Error": {"ErrorCode": "TicketSearch.AuthFail", "ErrorMessage": ".."}}``;
* query-string parameters (repeated keys become lists, ``+`` is a space); the
  body of a GET is never read; URI parameters win over query/body ones;
* SessionCreate -> ``{"SessionID": ..}``; sessions expire after an idle time
  or on demand; ``UserLogin`` + ``Password`` on each call work as well;
* TicketSearch -> ``{"TicketID": ["1", "2"]}`` (strings), ``{}`` when nothing
  matches, ``Limit`` (default 500), no offset; unknown queue names match nothing;
* ``SortBy=Age`` orders by the creation time only, ``Changed`` by the change
  time only (one SQL column): tickets of the same second come in no set order;
* TicketGet -> ``{"Ticket": [{"TicketID": 2, ...}]}`` (numbers), several ids
  as ``/Ticket/2,3``, ``AllArticles``/``ArticleLimit``/``ArticleOrder``/
  ``ArticleSenderType``; articles carry ``CommunicationChannelID`` (1 email,
  2 phone, 3 internal, 4 chat), not the channel's name; a missing or
  unreadable ticket -> ``TicketGet.AccessDenied``;
* TicketUpdate (PATCH) validates everything before changing anything, unknown
  queue or priority -> ``TicketUpdate.InvalidParameter``; answers
  ``{"TicketID": "2", "TicketNumber": "..", "ArticleID": 4}``; ``Changed``
  moves on every change;
* a queue change the agent may not make (no ``move_into`` on the target queue:
  ``TicketQueueSet`` fails) answers **HTTP 500** with
  ``{"faultcode":"Server","faultstring":"Ticket queue could not be updated, please contact system administrator!"}``
  and changes nothing (as OTOBO 11 does);
* a web service name that does not exist (names are case-sensitive) answers
  **HTTP 500 with an empty body** (as OTOBO 11 does).

Test controls: add tickets, change them "as a person", expire sessions, inject
failures (429 with Retry-After, 5xx), take the system down and bring it back,
and a log of every request.  Runs with uvicorn on 127.0.0.1, a free port, in a
thread: ``with OtoboStandin() as otobo: ... otobo.base_url``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: operation -> (methods, route) as in the standard GenericTicketConnectorREST web service
STANDARD_ROUTES: dict[str, tuple[tuple[str, ...], str]] = {
    "SessionCreate": (("POST",), "/Session"),
    "TicketGet": (("GET",), "/Ticket/:TicketID"),
    "TicketSearch": (("GET",), "/Ticket"),
    "TicketUpdate": (("PATCH",), "/Ticket/:TicketID"),
}

def routes_from_webservice(definition: dict[str, Any]) -> dict[str, tuple[tuple[str, ...], str]]:
    """The route mapping of a web service definition (the YAML an admin imports)."""
    mapping = definition["Provider"]["Transport"]["Config"]["RouteOperationMapping"]
    operations = definition["Provider"]["Operation"]
    return {
        name: (tuple(entry.get("RequestMethod") or ()), entry["Route"])
        for name, entry in mapping.items()
        if name in operations
    }


DEFAULT_QUEUES = ["Postmaster", "Raw", "Junk", "Misc"]
DEFAULT_PRIORITIES = ["1 very low", "2 low", "3 normal", "4 high", "5 very high"]
#: state -> state type
DEFAULT_STATES = {
    "new": "new",
    "open": "open",
    "closed successful": "closed",
    "closed unsuccessful": "closed",
    "pending reminder": "pending reminder",
    "pending auto close+": "pending auto",
    "removed": "removed",
    "merged": "merged",
}
#: communication channel name -> CommunicationChannelID (as a fresh OTOBO installs them)
CHANNEL_IDS = {"Email": 1, "Phone": 2, "Internal": 3, "Chat": 4}
ALL_PERMISSIONS = frozenset({"ro", "move_into", "create", "note", "owner", "priority", "rw"})


@dataclass
class Article:
    id: int
    subject: str
    body: str
    sender_type: str = "customer"
    channel: str = "Email"
    visible: int = 1
    content_type: str = "text/plain; charset=utf8"
    created: str = ""


@dataclass
class StandinTicket:
    id: int
    number: str
    title: str
    queue: str
    priority: str
    state: str
    created: str
    changed: str
    articles: list[Article] = field(default_factory=list)


class _Fault(Exception):
    """An operation that failed inside OTOBO: the REST transport answers HTTP 500 with a fault object."""

    def __init__(self, faultstring: str) -> None:
        super().__init__(faultstring)
        self.faultstring = faultstring


@dataclass
class _Failure:
    status: int
    retry_after: str | None
    body: str


class OtoboStandin:
    """The fake system: state, test controls, and the ASGI app serving it."""

    def __init__(
        self,
        *,
        product: str = "otobo",
        webservice: str = "HelpdeskConnector",
        users: dict[str, str] | None = None,
        queues: list[str] | None = None,
        routes: dict[str, tuple[tuple[str, ...], str]] | None = None,
        session_max_idle: float = 3600.0,
        search_limit_default: int = 500,
    ) -> None:
        self.product = product
        self.webservice = webservice
        self.users = dict(users or {"connector": "s3cret"})
        self.queues = {name: i for i, name in enumerate(queues or DEFAULT_QUEUES + ["Support", "Support::Hardware", "Billing"], 1)}
        self.priorities = {name: i for i, name in enumerate(DEFAULT_PRIORITIES, 1)}
        self.states = {name: i for i, name in enumerate(DEFAULT_STATES, 1)}
        self.routes = dict(routes or STANDARD_ROUTES)
        self.session_max_idle = session_max_idle
        self.search_limit_default = search_limit_default
        #: login -> queue -> permissions; a queue missing from a user's map means all permissions
        self.permissions: dict[str, dict[str, set[str]]] = {}
        self.tickets: dict[int, StandinTicket] = {}
        self.sessions: dict[str, tuple[str, float]] = {}
        self.requests: list[dict[str, Any]] = []
        self.down = False
        #: "real": search ids as strings, TicketGet ids as numbers, TicketUpdate TicketID string (as OTOBO 11);
        #: "numbers" / "strings": every id in that form
        self.id_style = "real"
        #: called as ``before_request(method, route, operation)`` before an operation runs
        #: (a test plays the person who changes a ticket at that moment)
        self.before_request: Callable[[str, str, str], None] | None = None
        #: seconds each request takes (to observe concurrency)
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures: deque[_Failure] = deque()
        self._ticket_ids = itertools.count(1)
        self._article_ids = itertools.count(1)
        self._clock_offset = 0.0
        #: orders tickets that share a sort value (the database gives them in no set order)
        self._ties = random.Random(20261128)
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    # ------------------------------------------------------------------ lifecycle

    @property
    def prefix(self) -> str:
        return f"/{self.product}/nph-genericinterface.pl/Webservice/{self.webservice}"

    @property
    def base_url(self) -> str:
        assert self.port is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> OtoboStandin:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port or 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the OTOBO stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> OtoboStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls

    def now(self) -> str:
        return (datetime.now(timezone.utc) + timedelta(seconds=self._clock_offset)).strftime(TIME_FORMAT)

    def advance(self, seconds: float) -> None:
        """Move the system clock forward (timestamps are whole seconds, as in OTOBO)."""
        self._clock_offset += seconds

    def add_ticket(
        self,
        title: str,
        body: str = "",
        *,
        queue: str = "Raw",
        priority: str = "3 normal",
        state: str = "new",
        sender_type: str = "customer",
        content_type: str = "text/plain; charset=utf8",
        created: str | None = None,
    ) -> int:
        with self._lock:
            ticket_id = next(self._ticket_ids)
            stamp = created or self.now()
            ticket = StandinTicket(
                id=ticket_id,
                number=f"2026112810000{ticket_id:03d}",
                title=title,
                queue=queue,
                priority=priority,
                state=state,
                created=stamp,
                changed=stamp,
            )
            ticket.articles.append(
                Article(next(self._article_ids), title, body, sender_type=sender_type, content_type=content_type, created=stamp)
            )
            self.tickets[ticket_id] = ticket
            return ticket_id

    def human_update(self, ticket_id: int, **changes: str) -> None:
        """A person changes the ticket (queue=, priority=, state=, title=); Changed moves."""
        with self._lock:
            ticket = self.tickets[ticket_id]
            for key, value in changes.items():
                setattr(ticket, key, value)
            ticket.changed = self.now()

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    def fail_next(self, count: int = 1, *, status: int = 503, retry_after: float | None = None, body: str | None = None) -> None:
        """The next ``count`` requests fail with ``status`` (before reaching an operation)."""
        for _ in range(count):
            self._failures.append(
                _Failure(status, None if retry_after is None else str(retry_after), body if body is not None else "Service Unavailable")
            )

    def notes(self, ticket_id: int) -> list[Article]:
        return [a for a in self.tickets[ticket_id].articles if a.channel == "Internal"]

    def move_into_queue(self, ticket_id: int, queue: str, *, state: str | None = None) -> None:
        """A person (or a rule) moves a ticket into ``queue`` (and sets its state); Changed moves."""
        changes = {"queue": queue} if state is None else {"queue": queue, "state": state}
        self.human_update(ticket_id, **changes)

    def calls(self, operation: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if operation is None or r["operation"] == operation]

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            response = await self._dispatch(request)
        finally:
            self.in_flight -= 1
        return response

    def _id(self, value: int, natural: str) -> int | str:
        style = natural if self.id_style == "real" else self.id_style
        return str(value) if style == "strings" else value

    async def _dispatch(self, request: Request) -> Response:
        raw_path = request.url.path
        method = request.method
        entry: dict[str, Any] = {"method": method, "path": raw_path, "operation": None, "query": request.url.query}
        self.requests.append(entry)
        if self.down:
            return PlainTextResponse("Service Unavailable", status_code=503)
        if self._failures:
            failure = self._failures.popleft()
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            return PlainTextResponse(failure.body, status_code=failure.status, headers=headers)
        if not raw_path.startswith(self.prefix + "/") and raw_path != self.prefix:
            # OTOBO 11 answers an unknown (or wrongly cased) web service name with an empty 500
            return Response(b"", status_code=500)
        route_path = raw_path[len(self.prefix) :] or "/"
        operation, uri_data = self._match(method, route_path)
        if operation is None:
            return PlainTextResponse(
                f"HTTP::REST Error while determine Operation for request URI '{route_path}'.", status_code=500
            )
        entry["operation"] = operation
        data: dict[str, Any] = {}
        data.update(_query_params(request.url.query))
        if method != "GET":
            content = await request.body()
            if content:
                try:
                    decoded = json.loads(content)
                except ValueError:
                    return PlainTextResponse("Error while decoding request content.", status_code=500)
                if not isinstance(decoded, dict):
                    return PlainTextResponse("Unsupported request content structure.", status_code=500)
                data.update(decoded)
                entry["body"] = decoded
        data.update(uri_data)
        entry["data"] = data
        if self.before_request is not None:
            self.before_request(method, route_path, operation)
        with self._lock:
            try:
                result = getattr(self, f"_op_{operation}")(data)
            except _Fault as fault:
                entry["answer"] = {"faultcode": "Server", "faultstring": fault.faultstring}
                return JSONResponse(entry["answer"], status_code=500)
        entry["answer"] = result
        return JSONResponse(result, status_code=200)

    def _match(self, method: str, path: str) -> tuple[str | None, dict[str, str]]:
        for operation in sorted(self.routes):
            methods, route = self.routes[operation]
            if method not in methods:
                continue
            pattern = "^" + re.sub(r":([^/]+)", r"(?P<\1>[^/]+)", route) + "$"
            found = re.match(pattern, path)
            if found:
                return operation, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, {}

    # ------------------------------------------------------------------ auth

    def _auth(self, data: dict[str, Any]) -> str | None:
        session_id = data.get("SessionID")
        if session_id:
            found = self.sessions.get(str(session_id))
            if found is None:
                return None
            user, last = found
            if time.monotonic() - last > self.session_max_idle:
                del self.sessions[str(session_id)]
                return None
            self.sessions[str(session_id)] = (user, time.monotonic())
            return user
        login = data.get("UserLogin")
        if login and self.users.get(str(login)) == data.get("Password"):
            return str(login)
        return None

    def _can(self, user: str, queue: str, permission: str) -> bool:
        granted = self.permissions.get(user, {}).get(queue)
        if granted is None:
            return True
        return permission in granted or "rw" in granted

    @staticmethod
    def _error(code: str, message: str) -> dict[str, Any]:
        return {"Error": {"ErrorCode": code, "ErrorMessage": message}}

    # ------------------------------------------------------------------ operations

    def _op_SessionCreate(self, data: dict[str, Any]) -> dict[str, Any]:
        login, password = data.get("UserLogin"), data.get("Password")
        if not login or not password:
            return self._error("SessionCreate.MissingParameter", "SessionCreate: UserLogin, CustomerUserLogin or SessionID is required!")
        if self.users.get(str(login)) != password:
            return self._error("SessionCreate.AuthFail", "SessionCreate: Authorization failing!")
        session_id = secrets.token_hex(16)
        self.sessions[session_id] = (str(login), time.monotonic())
        return {"SessionID": session_id}

    def _op_TicketSearch(self, data: dict[str, Any]) -> dict[str, Any]:
        user = self._auth(data)
        if user is None:
            return self._error("TicketSearch.AuthFail", "TicketSearch: Authorization failing!")
        limit = int(data.get("Limit") or self.search_limit_default)
        for prefix in ("TicketCreateTime", "TicketLastChangeTime"):
            for suffix in ("NewerDate", "OlderDate"):
                value = data.get(prefix + suffix)
                if value and not _STAMP.match(str(value)):
                    return {}  # the search logs "Invalid time format" and is not executed
            newer = data.get(prefix + "NewerDate")
            if newer and str(newer) > self.now():
                return {}  # "don't execute queries if newer date is after current date"
        queues = _as_list(data.get("Queues"))
        states = _as_list(data.get("States"))
        state_types = _as_list(data.get("StateType"))
        priorities = _as_list(data.get("Priorities"))
        matches = []
        for ticket in self.tickets.values():
            if not self._can(user, ticket.queue, "ro"):
                continue
            if queues and ticket.queue not in queues:
                continue
            if states and ticket.state not in states:
                continue
            if state_types and not _state_type_matches(DEFAULT_STATES.get(ticket.state, "open"), state_types):
                continue
            if priorities and ticket.priority not in priorities:
                continue
            if not _time_ok(ticket.created, data, "TicketCreateTime"):
                continue
            if not _time_ok(ticket.changed, data, "TicketLastChangeTime"):
                continue
            matches.append(ticket)
        sort_by = _as_list(data.get("SortBy")) or ["Age"]
        order_by = _as_list(data.get("OrderBy")) or ["Down"]
        # one SQL column per sort option: ties come in no set order
        key = {"Age": lambda t: t.created, "Changed": lambda t: t.changed, "TicketNumber": lambda t: t.number}.get(
            sort_by[0], lambda t: t.created
        )
        self._ties.shuffle(matches)
        matches.sort(key=key, reverse=order_by[0] == "Down")
        ids = [self._id(t.id, "strings") for t in matches[:limit]]
        return {"TicketID": ids} if ids else {}

    def _op_TicketGet(self, data: dict[str, Any]) -> dict[str, Any]:
        user = self._auth(data)
        if user is None:
            return self._error("TicketGet.AuthFail", "TicketGet: Authorization failing!")
        raw = data.get("TicketID")
        if not raw:
            return self._error("TicketGet.MissingParameter", "TicketGet: TicketID parameter is missing!")
        wanted = raw if isinstance(raw, list) else str(raw).split(",")
        tickets = []
        for value in wanted:
            try:
                ticket = self.tickets.get(int(value))
            except ValueError:
                ticket = None
            if ticket is None or not self._can(user, ticket.queue, "ro"):
                return self._error("TicketGet.AccessDenied", "TicketGet: User does not have access to the ticket!")
            tickets.append(ticket)
        all_articles = str(data.get("AllArticles") or "0") not in ("0", "")
        out = []
        for ticket in tickets:
            item = self._ticket_json(ticket)
            articles = self._selected_articles(ticket, data) if all_articles else []
            if articles:
                item["Article"] = [self._article_json(ticket, a) for a in articles]
            out.append(item)
        return {"Ticket": out}

    def _ticket_json(self, ticket: StandinTicket) -> dict[str, Any]:
        return {
            "TicketID": self._id(ticket.id, "numbers"),
            "TicketNumber": ticket.number,
            "Title": ticket.title,
            "Queue": ticket.queue,
            "QueueID": self.queues.get(ticket.queue),
            "Priority": ticket.priority,
            "PriorityID": self.priorities.get(ticket.priority),
            "State": ticket.state,
            "StateID": self.states.get(ticket.state),
            "StateType": DEFAULT_STATES.get(ticket.state, "open"),
            "Lock": "unlock",
            "Type": "Unclassified",
            "Owner": "root@localhost",
            "CustomerUserID": "customer@example.com",
            "Created": ticket.created,
            "Changed": ticket.changed,
            "Age": 0,
            "ArchiveFlag": "n",
        }

    @staticmethod
    def _selected_articles(ticket: StandinTicket, data: dict[str, Any]) -> list[Article]:
        """The articles TicketGet returns: ArticleSenderType, ArticleOrder and ArticleLimit applied."""
        senders = _as_list(data.get("ArticleSenderType"))
        limit = int(data.get("ArticleLimit") or 0)
        articles = [a for a in ticket.articles if not senders or a.sender_type in senders]
        if str(data.get("ArticleOrder") or "ASC").upper() == "DESC":
            articles = list(reversed(articles))
        return articles[:limit] if limit else articles

    def _article_json(self, ticket: StandinTicket, a: Article) -> dict[str, Any]:
        return {
            "ArticleID": self._id(a.id, "numbers"),
            "TicketID": self._id(ticket.id, "numbers"),
            "Subject": a.subject,
            "Body": a.body,
            "SenderType": a.sender_type,
            "CommunicationChannelID": CHANNEL_IDS[a.channel],
            "IsVisibleForCustomer": a.visible,
            "ContentType": a.content_type,
            "MimeType": a.content_type.split(";")[0],
            "Charset": "utf8",
            "CreateTime": a.created,
            "From": "customer@example.com" if a.sender_type == "customer" else "Agent",
        }

    def _op_TicketUpdate(self, data: dict[str, Any]) -> dict[str, Any]:
        if not data.get("TicketID") and not data.get("TicketNumber"):
            return self._error("TicketUpdate.MissingParameter", "TicketUpdate: TicketID or TicketNumber is required!")
        if data.get("UserLogin") and not data.get("Password"):
            return self._error("TicketUpdate.MissingParameter", "TicketUpdate: Password or SessionID is required!")
        user = self._auth(data)
        if user is None:
            return self._error("TicketUpdate.AuthFail", "TicketUpdate: User could not be authenticated!")
        try:
            ticket = self.tickets.get(int(str(data["TicketID"])))
        except ValueError:
            ticket = None
        if ticket is None or not self._can(user, ticket.queue, "ro"):
            return self._error("TicketUpdate.AccessDenied", "TicketUpdate: User does not have access to the ticket!")
        fields = data.get("Ticket")
        article = data.get("Article")
        for name, value in (("Ticket", fields), ("Article", article)):
            if value is not None and not (isinstance(value, dict) and value):
                return self._error("TicketUpdate.InvalidParameter", f"TicketUpdate: {name} parameter is not valid!")
        targets = self._update_targets(fields or {})
        if isinstance(targets, dict):
            return targets
        problem = (self._article_problem(article) if article else None) or self._update_rights_problem(
            user, ticket, bool(article), targets
        )
        if problem is not None:
            return problem
        return self._apply_update(ticket, article, targets)

    def _update_targets(self, fields: dict[str, Any]) -> tuple[str | None, str | None, str | None] | dict[str, Any]:
        """(queue, priority, state) that TicketUpdate's Ticket asks for, or the error for an unknown one."""
        found: dict[str, str | None] = {}
        for field, table in (("Queue", self.queues), ("State", self.states), ("Priority", self.priorities)):
            found[field] = None
            if fields.get(field) or fields.get(f"{field}ID"):
                found[field] = self._lookup(table, fields.get(field), fields.get(f"{field}ID"))
                if found[field] is None:
                    return self._error(
                        "TicketUpdate.InvalidParameter",
                        f"TicketUpdate: Ticket->{field}ID or Ticket->{field} parameter is invalid!",
                    )
        return found["Queue"], found["Priority"], found["State"]

    def _article_problem(self, article: dict[str, Any]) -> dict[str, Any] | None:
        for needed in ("Subject", "Body"):
            if not str(article.get(needed) or "").strip():
                return self._error("TicketUpdate.MissingParameter", f"TicketUpdate: Article->{needed} parameter is missing!")
        channel = article.get("CommunicationChannel") or "Internal"
        if channel not in CHANNEL_IDS:
            return self._error(
                "TicketUpdate.InvalidParameter",
                "TicketUpdate: Article->CommunicationChannel or Article->CommunicationChannelID parameter is invalid or not supported!",
            )
        sender = article.get("SenderType") or "agent"
        if sender not in ("agent", "system", "customer"):
            return self._error(
                "TicketUpdate.InvalidParameter", "TicketUpdate: Article->SenderTypeID or Ticket->SenderType parameter is invalid!"
            )
        if not (article.get("ContentType") or (article.get("MimeType") and article.get("Charset"))):
            return self._error(
                "TicketUpdate.MissingParameter",
                "TicketUpdate: Article->ContentType or Ticket->MimeType and Article->Charset parameters are required!",
            )
        return None

    def _update_rights_problem(
        self, user: str, ticket: StandinTicket, with_article: bool, targets: tuple[str | None, str | None, str | None]
    ) -> dict[str, Any] | None:
        """Rights, checked as the operation's update-permission check does, on the ticket's current queue.

        'note' for an article, 'move' for a queue change (no group right of its own: 'rw' grants it),
        'priority' for a priority change.
        """
        new_queue, new_priority, _ = targets
        if with_article and not self._can(user, ticket.queue, "note"):
            return self._error("TicketUpdate.AccessDenied", "TicketUpdate: Does not have permissions to create new articles!")
        if new_queue is not None and not self._can(user, ticket.queue, "move"):
            return self._error("TicketUpdate.AccessDenied", "TicketUpdate: Does not have permissions to update queue!")
        if new_priority is not None and not self._can(user, ticket.queue, "priority"):
            return self._error("TicketUpdate.AccessDenied", "TicketUpdate: Does not have permissions to update priority!")
        if new_queue is not None and new_queue != ticket.queue and not self._can(user, new_queue, "move_into"):
            # TicketQueueSet refuses; the operation returns Success 0 before touching anything else
            raise _Fault("Ticket queue could not be updated, please contact system administrator!")
        return None

    def _apply_update(
        self, ticket: StandinTicket, article: dict[str, Any] | None, targets: tuple[str | None, str | None, str | None]
    ) -> dict[str, Any]:
        changed = False
        for attr, value in zip(("queue", "priority", "state"), targets, strict=True):
            if value is not None and getattr(ticket, attr) != value:
                setattr(ticket, attr, value)
                changed = True
        result: dict[str, Any] = {"TicketID": self._id(ticket.id, "strings"), "TicketNumber": ticket.number}
        if article:
            visible = article.get("IsVisibleForCustomer")
            new = Article(
                next(self._article_ids),
                str(article["Subject"]),
                str(article["Body"]),
                sender_type=str(article.get("SenderType") or "agent"),
                channel=str(article.get("CommunicationChannel") or "Internal"),
                visible=1 if visible is None else int(visible),
                content_type=str(article.get("ContentType") or "text/plain; charset=utf8"),
                created=self.now(),
            )
            ticket.articles.append(new)
            result["ArticleID"] = self._id(new.id, "numbers")
            changed = True
        if changed:
            ticket.changed = self.now()
        return result

    @staticmethod
    def _lookup(table: dict[str, int], name: Any, ident: Any) -> str | None:
        if name:
            return str(name) if str(name) in table else None
        for key, value in table.items():
            if str(value) == str(ident):
                return key
        return None


def _query_params(query: str) -> dict[str, Any]:
    """Parse a query string as the REST transport does (repeated keys -> list, '+' -> space)."""
    out: dict[str, Any] = {}
    if not query:
        return out
    for pair in re.split(r"[;&]", query):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key = unquote(key.replace("+", "%20"))
        value = unquote(value.replace("+", "%20"))
        if key not in out:
            out[key] = value
        elif isinstance(out[key], list):
            out[key].append(value)
        else:
            out[key] = [out[key], value]
    return out


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _state_type_matches(kind: str, wanted: list[str]) -> bool:
    """``Open``/``Closed`` (capitalised) are the two groups; other values are real state types."""
    for value in wanted:
        if value == "Open" and kind not in ("closed", "removed", "merged"):
            return True
        if value == "Closed" and kind == "closed":
            return True
        if value.lower() == kind:
            return True
    return False


_STAMP = re.compile(r"\d\d\d\d-(\d\d|\d)-(\d\d|\d) (\d\d|\d):(\d\d|\d):(\d\d|\d)")


def _time_ok(stamp: str, data: dict[str, Any], prefix: str) -> bool:
    """``NewerDate`` / ``OlderDate`` bounds, both inclusive, as the ticket search applies them."""
    newer = data.get(f"{prefix}NewerDate")
    older = data.get(f"{prefix}OlderDate")
    if newer and stamp < str(newer):
        return False
    if older and stamp > str(older):
        return False
    return True
