"""A faithful local stand-in of Zammad's REST API v1, for the adapter's tests.

Written for this project from Zammad's official REST API documentation and
its published controller behaviour.  It keeps the real system's shapes,
status codes, quirks and error forms:

* auth: ``Authorization: Token token=<t>`` (also ``Bearer <t>`` and HTTP
  basic); no credentials -> 403 ``Authentication required``; a bad token ->
  401 ``Can't find User for Token`` (with an ``X-Failure`` header); a right
  missing -> 403 ``Not authorized``;
* errors are JSON ``{"error": .., "error_human": ..}``; an unknown name in an
  update -> 422 ``No lookup value found for 'group': "X"``; an unknown ticket
  -> 404 ``Couldn't find Ticket with 'id'=N``;
* ids are JSON numbers; timestamps ``2021-11-03T11:51:13.759Z``;
* ``GET /api/v1/tickets/search?query=..&expand=true&page=&per_page=``
  (per_page at most 200, default 50; default order ``updated_at desc``;
  ``sort_by``/``order_by``).  Matching runs against a *search index that lags*:
  each ticket is matched as it was ``index_lag`` seconds ago (a new ticket is
  not found until then), while the hits are returned with their current data
  from the database -- exactly what Zammad does with Elasticsearch.  A query
  the index cannot parse gives an empty list, as Zammad logs and swallows
  Elasticsearch errors;
* ``GET /api/v1/tickets?expand=true&page=&per_page=`` (id order, at most 100);
* ``GET /api/v1/ticket_articles/by_ticket/{id}`` (``sender``/``type`` names,
  ``content_type`` ``text/html`` bodies as the web UI writes them);
* ``PUT /api/v1/tickets/{id}`` with names or ``*_id`` and an optional
  ``article``; ``updated_at`` changes on every change (also when an article is
  added); ``POST /api/v1/ticket_articles`` creates a note (201);
* ``GET /api/v1/groups`` needs ``admin.group`` (a plain agent gets 403: use
  ``GET /api/v1/users/me?expand=true``); priorities and states need
  ``ticket.agent``;
* 429 ``Retry later`` (text/plain) when rate limited, with ``Retry-After`` only
  when asked for -- Zammad itself does not throttle the ticket API, a proxy or
  Rack::Attack in front of it does; an outage answers 502 from the proxy.

Run it with :func:`running_standin` (a context manager): uvicorn in a thread,
bound to 127.0.0.1 on a free port.  The test drives the data through Python
methods (``create_ticket``, ``human_update``, ``advance``, ``fail_next`` ...)
and inspects ``requests`` / ``max_in_flight``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import fnmatch
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

# --------------------------------------------------------------------------- helpers


def iso(ts: float | None) -> str | None:
    """Zammad's timestamp form: UTC with milliseconds and a Z."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_human": message}, status_code=status, headers=headers)


class _Reject(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


# --------------------------------------------------------------------------- search query language


class QuerySyntaxError(ValueError):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lp>\() | (?P<rp>\)) |
        (?P<term>(?:[^\s()"\\\[{]|\\.)+ (?: "(?:[^"\\]|\\.)*" | [\[{][^\]}]*[\]}] )? | "(?:[^"\\]|\\.)*")
    )""",
    re.VERBOSE,
)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _tokens(query: str) -> list[str]:
    out: list[str] = []
    pos = 0
    query = query.strip()
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if not m or m.end() == pos:
            raise QuerySyntaxError(f"cannot parse query at {pos}: {query[pos:pos + 20]!r}")
        out.append(m.group("lp") or m.group("rp") or m.group("term"))
        pos = m.end()
        while pos < len(query) and query[pos].isspace():
            pos += 1
    return out


@dataclass
class _Term:
    field: str | None
    op: str  # "eq", ">=", ">", "<=", "<", "range"
    value: Any


def _split_field(token: str) -> tuple[str | None, str]:
    # first unescaped ':' separates field and value
    i = 0
    while i < len(token):
        if token[i] == "\\":
            i += 2
            continue
        if token[i] == ":":
            return token[:i], token[i + 1 :]
        if token[i] == '"':
            break
        i += 1
    return None, token


def _value(text: str) -> tuple[str, bool]:
    """(value, quoted)"""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _unescape(text[1:-1]), True
    if text.startswith('"'):
        raise QuerySyntaxError(f"unterminated quote in {text!r}")
    return _unescape(text), False


def _parse_term(token: str) -> _Term:
    field_name, raw = _split_field(token)
    if field_name is not None and not raw:
        raise QuerySyntaxError(f"empty value for {field_name!r}")
    if raw[:1] in "[{":
        m = re.fullmatch(r"[\[{]\s*(\"(?:[^\"\\]|\\.)*\"|\S+)\s+TO\s+(\"(?:[^\"\\]|\\.)*\"|\S+)\s*[\]}]", raw)
        if not m:
            raise QuerySyntaxError(f"bad range {raw!r}")
        low, _ = _value(m.group(1))
        high, _ = _value(m.group(2))
        inclusive = (raw[0] == "[", raw[-1] == "]")
        return _Term(field_name, "range", (low, high, inclusive))
    for op in (">=", "<=", ">", "<"):
        if raw.startswith(op):
            value, _ = _value(raw[len(op) :])
            return _Term(field_name, op, value)
    value, quoted = _value(raw)
    return _Term(field_name, "eq", (value, quoted))


class _Parser:
    """query := or ; or := and (OR and)* ; and := unary ((AND)? unary)* ; unary := NOT unary | atom"""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Any:
        if not self.tokens:
            raise QuerySyntaxError("empty query")
        node = self.parse_or()
        if self.peek() is not None:
            raise QuerySyntaxError(f"unexpected {self.peek()!r}")
        return node

    def parse_or(self) -> Any:
        nodes = [self.parse_and()]
        while self.peek() in ("OR", "||"):
            self.take()
            nodes.append(self.parse_and())
        return ("or", nodes) if len(nodes) > 1 else nodes[0]

    def parse_and(self) -> Any:
        nodes = [self.parse_unary()]
        while self.peek() is not None and self.peek() not in ("OR", "||", ")"):
            if self.peek() in ("AND", "&&"):
                self.take()
            nodes.append(self.parse_unary())
        return ("and", nodes) if len(nodes) > 1 else nodes[0]

    def parse_unary(self) -> Any:
        token = self.peek()
        if token is None:
            raise QuerySyntaxError("unexpected end of query")
        if token in ("NOT", "!"):
            self.take()
            return ("not", self.parse_unary())
        if token == "(":
            self.take()
            node = self.parse_or()
            if self.take() != ")":
                raise QuerySyntaxError("missing )")
            return node
        if token in (")", "AND", "OR", "&&", "||"):
            raise QuerySyntaxError(f"unexpected {token!r}")
        return ("term", _parse_term(self.take()))


def parse_query(query: str) -> Any:
    return _Parser(_tokens(query)).parse()


def _lookup(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _compare(actual: Any, op: str, wanted: str) -> bool:
    if actual is None:
        return False
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        try:
            a, w = float(actual), float(wanted)
        except ValueError:
            return False
    else:
        a_ts, w_ts = parse_ts(str(actual)), parse_ts(wanted)
        if a_ts is not None and w_ts is not None:
            a, w = a_ts, w_ts
        else:
            a, w = str(actual).lower(), wanted.lower()
    return {">=": a >= w, ">": a > w, "<=": a <= w, "<": a < w}[op]


def _term_matches(term: _Term, doc: dict[str, Any]) -> bool:
    if term.field is None and term.op == "eq" and term.value == ("*", False):
        return True  # match all
    if term.field is None:
        value, _ = term.value if term.op == "eq" else (str(term.value), True)
        haystack = " ".join(str(doc.get(k) or "") for k in ("title", "number", "body")).lower()
        return value.lower() in haystack
    actual = _lookup(doc, term.field)
    if term.op == "eq":
        value, quoted = term.value
        if actual is None:
            return False
        candidates = actual if isinstance(actual, list) else [actual]
        for item in candidates:
            text = str(item).lower()
            if quoted and text == value.lower():
                return True
            if not quoted and fnmatch.fnmatchcase(text, value.lower()):
                return True
        return False
    if term.op == "range":
        low, high, (inc_low, inc_high) = term.value
        if low != "*" and not _compare(actual, ">=" if inc_low else ">", low):
            return False
        if high != "*" and not _compare(actual, "<=" if inc_high else "<", high):
            return False
        return actual is not None
    return _compare(actual, term.op, term.value)


def evaluate(node: Any, doc: dict[str, Any]) -> bool:
    kind, arg = node
    if kind == "term":
        return _term_matches(arg, doc)
    if kind == "and":
        return all(evaluate(n, doc) for n in arg)
    if kind == "or":
        return any(evaluate(n, doc) for n in arg)
    if kind == "not":
        return not evaluate(arg, doc)
    raise AssertionError(kind)


# --------------------------------------------------------------------------- data


DEFAULT_STATES = [
    # id, name, state_type_id, state type
    (1, "new", 1, "new"),
    (2, "open", 2, "open"),
    (3, "pending reminder", 3, "pending reminder"),
    (4, "closed", 5, "closed"),
    (5, "merged", 6, "merged"),
    (6, "removed", 7, "removed"),
    (7, "pending close", 4, "pending action"),
]
DEFAULT_PRIORITIES = ["1 low", "2 normal", "3 high"]
ARTICLE_TYPES = {1: "email", 5: "web", 10: "note", 11: "phone"}
SENDERS = {1: "Agent", 2: "Customer", 3: "System"}


@dataclass
class ApiUser:
    id: int
    login: str
    password: str | None
    permissions: set[str]
    group_ids: set[int]
    active: bool = True


@dataclass
class Failure:
    status: int
    retry_after: str | None = None
    path_prefix: str = "/api/v1/"


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    status: int = 0


class ZammadStandin:
    """In-memory Zammad with the behaviour of its REST API; serve it with :func:`running_standin`."""

    def __init__(
        self,
        *,
        groups: list[str] | None = None,
        priorities: list[str] | None = None,
        index_lag: float = 0.0,
        agent_token: str = "agent-token",
        agent_groups: list[str] | None = None,
        agent_is_group_admin: bool = False,
        request_delay: float = 0.0,
    ) -> None:
        self._lock = threading.RLock()
        self._clock_offset = 0.0
        self._frozen_at: float | None = None
        self.index_lag = index_lag
        self.request_delay = request_delay
        self.groups: list[dict[str, Any]] = []
        for name in groups or ["Users", "Incoming", "Sales", "2nd Level", "Service Desk"]:
            self.add_group(name)
        self.priorities = [
            {"id": i, "name": name, "default_create": name == "2 normal", "active": True}
            for i, name in enumerate(priorities or DEFAULT_PRIORITIES, start=1)
        ]
        self.states = [
            {"id": i, "name": n, "state_type_id": st, "state_type": stn, "active": n != "removed"}
            for i, n, st, stn in DEFAULT_STATES
        ]
        self.users: dict[int, ApiUser] = {}
        self.tokens: dict[str, int] = {}
        #: access tokens past their expiry date (401 "Not authorized (token expired)!")
        self.expired_tokens: set[str] = set()
        self.oauth_tokens: dict[str, int] = {}
        self._user_ids = itertools.count(1)
        self.admin = self.add_user("admin@example.com", "adminpw", {"admin", "admin.group", "ticket.agent"},
                                   [g["name"] for g in self.groups])
        self.customer = self.add_user("customer@example.com", None, {"ticket.customer"}, [])
        perms = {"ticket.agent"} | ({"admin.group"} if agent_is_group_admin else set())
        self.agent = self.add_user("router@example.com", "agentpw", perms,
                                   agent_groups if agent_groups is not None else [g["name"] for g in self.groups])
        self.tokens[agent_token] = self.agent.id
        self.human = self.add_user("human.agent@example.com", "humanpw", {"ticket.agent"},
                                   [g["name"] for g in self.groups])
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, dict[str, Any]] = {}
        #: ticket id -> [(time, snapshot as the search index holds it)]
        self._index: dict[int, list[tuple[float, dict[str, Any]]]] = {}
        self._ticket_ids = itertools.count(1)
        self._article_ids = itertools.count(1)
        self._failures: list[Failure] = []
        self.down = False
        #: called as hook(method, path) before each request is answered (a person acting meanwhile, an outage ...)
        self.before_request: Any = None
        self.requests: list[LoggedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = self._build_app()

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at + self._clock_offset
        return time.time() + self._clock_offset

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or restart) the clock: tickets created meanwhile share one timestamp."""
        with self._lock:
            if frozen:
                self._frozen_at = time.time()
            else:
                assert self._frozen_at is not None
                self._clock_offset += self._frozen_at - time.time()
                self._frozen_at = None

    def advance(self, seconds: float) -> None:
        """Move the stand-in's clock (timestamps, Date header, index lag) forward."""
        with self._lock:
            self._clock_offset += seconds

    # ------------------------------------------------------------------ set-up API for tests

    def add_group(self, name: str, *, active: bool = True) -> dict[str, Any]:
        with self._lock:
            group = {
                "id": len(self.groups) + 1, "signature_id": None, "email_address_id": None, "name": name,
                "assignment_timeout": None, "follow_up_possible": "yes", "follow_up_assignment": True,
                "active": active, "note": None, "updated_by_id": 1, "created_by_id": 1,
                "created_at": iso(self.now()), "updated_at": iso(self.now()), "user_ids": [],
            }
            self.groups.append(group)
            return group

    def add_user(self, login: str, password: str | None, permissions: set[str], groups: list[str]) -> ApiUser:
        user = ApiUser(next(self._user_ids), login, password, set(permissions), {self.group_id(g) for g in groups})
        self.users[user.id] = user
        return user

    def add_token(self, token: str, user: ApiUser, *, oauth: bool = False) -> None:
        (self.oauth_tokens if oauth else self.tokens)[token] = user.id

    def group_id(self, name: str) -> int:
        for g in self.groups:
            if g["name"] == name:
                return g["id"]
        raise KeyError(name)

    def _by_name(self, rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["name"] == name), None)

    def _by_id(self, rows: list[dict[str, Any]], row_id: Any) -> dict[str, Any] | None:
        return next((r for r in rows if r["id"] == row_id), None)

    def create_ticket(
        self,
        title: str,
        body: str,
        *,
        group: str = "Incoming",
        priority: str = "2 normal",
        state: str = "new",
        content_type: str = "text/plain",
        article_type: str = "email",
        first_sender: str = "Customer",
    ) -> int:
        """A ticket as a customer's e-mail creates it; returns its id."""
        with self._lock:
            now = self.now()
            ticket_id = next(self._ticket_ids)
            ticket = {
                "id": ticket_id,
                "group_id": self.group_id(group),
                "priority_id": self._by_name(self.priorities, priority)["id"],
                "state_id": self._by_name(self.states, state)["id"],
                "organization_id": None,
                "number": str(31000 + ticket_id),
                "title": title,
                "owner_id": 1,
                "customer_id": self.customer.id,
                "note": None,
                "first_response_at": None,
                "close_at": now if state == "closed" else None,
                "last_contact_at": iso(now),
                "create_article_type_id": next(k for k, v in ARTICLE_TYPES.items() if v == article_type),
                "create_article_sender_id": next(k for k, v in SENDERS.items() if v == first_sender),
                "article_count": 0,
                "pending_time": None,
                "type": None,
                "preferences": {},
                "updated_by_id": self.customer.id,
                "created_by_id": self.customer.id,
                "created_at": now,
                "updated_at": now,
            }
            self.tickets[ticket_id] = ticket
            self._add_article(ticket_id, subject=title, body=body, content_type=content_type,
                              article_type=article_type, sender=first_sender, internal=False,
                              by=self.customer.id, touch=False)
            self._reindex(ticket_id)
            return ticket_id

    def add_article(self, ticket_id: int, body: str, *, sender: str = "Agent", internal: bool = True,
                    article_type: str = "note", content_type: str = "text/plain") -> int:
        with self._lock:
            article = self._add_article(ticket_id, subject="", body=body, content_type=content_type,
                                        article_type=article_type, sender=sender, internal=internal,
                                        by=self.human.id, touch=True)
            self._reindex(ticket_id)
            return article["id"]

    def human_update(self, ticket_id: int, **changes: str) -> None:
        """A person changes the ticket in the web UI (group=, priority=, state=, title=)."""
        with self._lock:
            ticket = self.tickets[ticket_id]
            for key, value in changes.items():
                if key == "title":
                    ticket["title"] = value
                    continue
                rows = {"group": self.groups, "priority": self.priorities, "state": self.states}[key]
                ticket[f"{key}_id"] = self._by_name(rows, value)["id"]
                if key == "state" and value == "closed" and ticket["close_at"] is None:
                    ticket["close_at"] = self.now()
            ticket["updated_at"] = self.now()
            ticket["updated_by_id"] = self.human.id
            self._reindex(ticket_id)

    def refresh_index(self) -> None:
        """Make the search index catch up with the database at once."""
        with self._lock:
            for ticket_id, versions in self._index.items():
                if versions:
                    versions[:] = [(float("-inf"), versions[-1][1])]

    def fail_next(self, count: int, status: int = 429, *, retry_after: str | None = None,
                  path_prefix: str = "/api/v1/") -> None:
        """Answer the next ``count`` matching requests with ``status`` (429, 502, ...)."""
        with self._lock:
            self._failures.extend(Failure(status, retry_after, path_prefix) for _ in range(count))

    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        return [a for a in self._articles_of(ticket_id) if a["type_id"] == 10 and a["internal"]]

    def ticket_view(self, ticket_id: int) -> dict[str, Any]:
        with self._lock:
            return self._expanded(self.tickets[ticket_id])

    # ------------------------------------------------------------------ internals

    def _add_article(self, ticket_id: int, *, subject: str, body: str, content_type: str, article_type: str,
                     sender: str, internal: bool, by: int, touch: bool) -> dict[str, Any]:
        now = self.now()
        article_id = next(self._article_ids)
        type_id = next(k for k, v in ARTICLE_TYPES.items() if v == article_type)
        sender_id = next(k for k, v in SENDERS.items() if v == sender)
        article = {
            "id": article_id, "ticket_id": ticket_id, "type_id": type_id, "sender_id": sender_id,
            "from": "Customer <customer@example.com>" if sender == "Customer" else "Router",
            "to": "", "cc": "", "subject": subject, "reply_to": None, "message_id": None,
            "message_id_md5": None, "in_reply_to": None, "content_type": content_type, "references": None,
            "body": body, "internal": internal, "preferences": {}, "updated_by_id": by, "created_by_id": by,
            "origin_by_id": None, "created_at": now, "updated_at": now, "attachments": [],
            "type": article_type, "sender": sender, "created_by": "-", "updated_by": "-", "time_unit": None,
        }
        self.articles[article_id] = article
        ticket = self.tickets[ticket_id]
        ticket["article_count"] += 1
        if touch:
            ticket["updated_at"] = now
        return article

    def _articles_of(self, ticket_id: int) -> list[dict[str, Any]]:
        return sorted((a for a in self.articles.values() if a["ticket_id"] == ticket_id), key=lambda a: a["id"])

    def _article_json(self, article: dict[str, Any]) -> dict[str, Any]:
        out = dict(article)
        out["created_at"] = iso(article["created_at"])
        out["updated_at"] = iso(article["updated_at"])
        return out

    def _compact(self, ticket: dict[str, Any]) -> dict[str, Any]:
        out = dict(ticket)
        for key in ("created_at", "updated_at", "close_at"):
            out[key] = iso(ticket[key])
        return out

    def _expanded(self, ticket: dict[str, Any]) -> dict[str, Any]:
        out = self._compact(ticket)
        out["article_ids"] = [a["id"] for a in self._articles_of(ticket["id"])]
        out["ticket_time_accounting_ids"] = []
        out["group"] = self._by_id(self.groups, ticket["group_id"])["name"]
        out["state"] = self._by_id(self.states, ticket["state_id"])["name"]
        out["priority"] = self._by_id(self.priorities, ticket["priority_id"])["name"]
        out["organization"] = None
        out["owner"] = "-"
        out["customer"] = self.users[ticket["customer_id"]].login
        out["created_by"] = self.users[ticket["created_by_id"]].login
        out["updated_by"] = self.users[ticket["updated_by_id"]].login
        out["create_article_type"] = ARTICLE_TYPES[ticket["create_article_type_id"]]
        out["create_article_sender"] = SENDERS[ticket["create_article_sender_id"]]
        return out

    def _index_doc(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """The ticket as Elasticsearch holds it: relations as objects with a name."""
        doc = self._compact(ticket)
        doc["group"] = {"id": ticket["group_id"], "name": self._by_id(self.groups, ticket["group_id"])["name"]}
        state = self._by_id(self.states, ticket["state_id"])
        doc["state"] = {"id": state["id"], "name": state["name"]}
        doc["priority"] = {"id": ticket["priority_id"],
                           "name": self._by_id(self.priorities, ticket["priority_id"])["name"]}
        doc["body"] = " ".join(a["body"] for a in self._articles_of(ticket["id"]))
        return doc

    def _reindex(self, ticket_id: int) -> None:
        self._index.setdefault(ticket_id, []).append((self.now(), self._index_doc(self.tickets[ticket_id])))

    def _indexed(self, ticket_id: int) -> dict[str, Any] | None:
        """The version of the ticket the lagging search index holds now (None: not indexed yet)."""
        horizon = self.now() - self.index_lag
        found = None
        for when, doc in self._index.get(ticket_id, []):
            if when <= horizon:
                found = doc
        return found

    def _can_read(self, user: ApiUser, ticket: dict[str, Any]) -> bool:
        if "ticket.agent" in user.permissions and ticket["group_id"] in user.group_ids:
            return True
        return "ticket.customer" in user.permissions and ticket["customer_id"] == user.id

    # ------------------------------------------------------------------ auth

    def _authenticate(self, request: Request) -> ApiUser:
        header = request.headers.get("authorization")
        if not header:
            raise _Reject(error(403, "Authentication required"))
        scheme, _, rest = header.partition(" ")
        scheme_l = scheme.lower()
        user_id: int | None = None
        if scheme_l == "basic":
            try:
                login, _, password = base64.b64decode(rest.strip()).decode().partition(":")
            except Exception:  # noqa: BLE001 - any garbage is a failed login
                login, password = "", ""
            user = next((u for u in self.users.values() if u.login == login and u.password == password), None)
            if user is None:
                raise _Reject(error(401, "Invalid BasicAuth credentials",
                                    {"X-Failure": "Invalid BasicAuth credentials"}))
            user_id = user.id
        elif scheme_l in ("token", "bearer"):
            token = rest.strip()
            if scheme_l == "token":
                m = re.fullmatch(r'token="?([^",\s]+)"?.*', token)
                token = m.group(1) if m else ""
            user_id = self.tokens.get(token)
            if user_id is not None and token in self.expired_tokens:
                raise _Reject(error(401, "Not authorized (token expired)!",
                                    {"X-Failure": "Not authorized (token expired)!"}))
            if user_id is None and scheme_l == "bearer":
                user_id = self.oauth_tokens.get(token)
                if user_id is None:
                    raise _Reject(error(401, "The provided token is invalid.",
                                        {"X-Failure": "The provided token is invalid."}))
            if user_id is None:
                raise _Reject(error(401, "Can't find User for Token", {"X-Failure": "Can't find User for Token"}))
        else:
            raise _Reject(error(403, "Authentication required"))
        user = self.users[user_id]
        if not user.active:
            raise _Reject(error(401, "Login failed. Have you double-checked your credentials and completed "
                                     "the email verification step?"))
        return user

    @staticmethod
    def _require(user: ApiUser, *permissions: str) -> None:
        if not any(p in user.permissions for p in permissions):
            raise _Reject(error(403, "Not authorized"))

    # ------------------------------------------------------------------ HTTP app

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.middleware("http")(self._frame)
        for path, endpoint, methods in self._routes():
            app.add_api_route(path, self._handle(endpoint), methods=methods)
        app.add_exception_handler(404, _no_route)
        app.add_exception_handler(405, _no_route)
        return app

    def _routes(self) -> list[tuple[str, Any, list[str]]]:
        return [
            ("/api/v1/users/me", self._ep_users_me, ["GET"]),
            ("/api/v1/groups", self._ep_groups, ["GET"]),
            ("/api/v1/ticket_priorities", self._ep_priorities, ["GET"]),
            ("/api/v1/ticket_states", self._ep_states, ["GET"]),
            ("/api/v1/tickets", self._ep_tickets_index, ["GET"]),
            ("/api/v1/tickets/search", self._ep_tickets_search, ["GET"]),
            ("/api/v1/tickets/{ticket_id}", self._ep_ticket_show, ["GET"]),
            ("/api/v1/tickets/{ticket_id}", self._ep_ticket_update, ["PUT"]),
            ("/api/v1/ticket_articles/by_ticket/{ticket_id}", self._ep_articles_by_ticket, ["GET"]),
            ("/api/v1/ticket_articles", self._ep_article_create, ["POST"]),
        ]

    async def _frame(self, request: Request, call_next: Any) -> Response:
        try:
            body: Any = json.loads(await request.body() or b"null")
        except ValueError:
            body = "<invalid json>"
        logged = LoggedRequest(request.method, request.url.path, dict(request.query_params), body,
                               request.headers.get("authorization"))
        date = {"Date": email.utils.formatdate(self.now(), usegmt=True)}
        with self._lock:
            if self.before_request is not None:
                self.before_request(request.method, request.url.path)
            self.requests.append(logged)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            failure = None
            if self._failures and request.url.path.startswith(self._failures[0].path_prefix):
                failure = self._failures.pop(0)
            down = self.down
        try:
            if self.request_delay:
                await asyncio.sleep(self.request_delay)
            if down:
                response: Response = Response(
                    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
                    "</h1></center><hr><center>nginx</center></body></html>",
                    status_code=502, media_type="text/html", headers=date)
            elif failure is not None and failure.status == 429:
                headers = dict(date)
                if failure.retry_after is not None:
                    headers["Retry-After"] = failure.retry_after
                response = PlainTextResponse("Retry later\n", status_code=429, headers=headers)
            elif failure is not None:
                response = error(failure.status, f"Error ID {secrets.token_urlsafe(6)}: Please contact your "
                                                 "administrator.", date)
            else:
                try:
                    response = await call_next(request)
                except _Reject as reject:
                    response = reject.response
                response.headers["Date"] = date["Date"]
            logged.status = response.status_code
            return response
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, fn: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            try:
                user = self._authenticate(request)
                body: Any = None
                if request.method in ("POST", "PUT"):
                    try:
                        body = json.loads(await request.body() or b"{}")
                    except ValueError:
                        return error(422, "Unable to parse JSON body")
                with self._lock:
                    return fn(request, user, body)
            except _Reject as reject:
                return reject.response

        wrapper.__name__ = fn.__name__
        return wrapper

    def _find_ticket(self, user: ApiUser, raw_id: Any) -> dict[str, Any]:
        try:
            ticket_id = int(raw_id)
        except (TypeError, ValueError):
            ticket_id = -1
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise _Reject(error(404, f"Couldn't find Ticket with 'id'={raw_id}"))
        if not self._can_read(user, ticket):
            raise _Reject(error(403, "Not authorized"))
        return ticket

    def _resolve(self, kind: str, rows: list[dict[str, Any]], body: dict[str, Any]) -> int | None:
        if kind in body and body[kind] not in (None, ""):
            row = self._by_name(rows, str(body[kind]))
            if row is None:
                raise _Reject(error(422, f"No lookup value found for '{kind}': {json.dumps(body[kind])}"))
            return row["id"]
        if f"{kind}_id" in body and body[f"{kind}_id"] not in (None, ""):
            try:
                row = self._by_id(rows, int(body[f"{kind}_id"]))
            except (TypeError, ValueError):
                row = None
            if row is None:
                # a foreign key violation: Zammad hides the detail from non-admins
                raise _Reject(error(422, f"Error ID {secrets.token_urlsafe(6)}: Please contact your "
                                         "administrator."))
            return row["id"]
        return None

    def _article_from(self, ticket_id: int, user: ApiUser, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict) or not str(data.get("body") or "").strip():
            raise _Reject(error(422, 'Need at least article: { body: "some text" }'))
        article_type = str(data.get("type") or "note")
        if article_type not in ARTICLE_TYPES.values():
            raise _Reject(error(422, f"No lookup value found for 'type': {json.dumps(article_type)}"))
        content_type = str(data.get("content_type") or "text/plain")
        internal = bool(data.get("internal", False))
        sender = str(data.get("sender") or ("Agent" if "ticket.agent" in user.permissions else "Customer"))
        return self._add_article(ticket_id, subject=str(data.get("subject") or ""), body=str(data["body"]),
                                    content_type=content_type, article_type=article_type, sender=sender,
                                    internal=internal, by=user.id, touch=True)

    def _ep_users_me(self, request: Request, user: ApiUser, _body: Any) -> Response:
        data: dict[str, Any] = {
            "id": user.id, "login": user.login, "email": user.login, "firstname": "", "lastname": "",
            "active": user.active, "role_ids": [], "organization_ids": [],
            "group_ids": {str(g): ["full"] for g in sorted(user.group_ids)},
        }
        if _expand(request):
            data["groups"] = {self._by_id(self.groups, g)["name"]: ["full"] for g in sorted(user.group_ids)}
            data["roles"] = ["Agent"] if "ticket.agent" in user.permissions else ["Customer"]
        return JSONResponse(data)

    def _ep_groups(self, request: Request, user: ApiUser, _body: Any) -> Response:
        self._require(user, "admin.group")
        return JSONResponse(self.groups)

    def _ep_priorities(self, request: Request, user: ApiUser, _body: Any) -> Response:
        self._require(user, "ticket.agent", "admin.object", "ticket.customer")
        return JSONResponse(self.priorities)

    def _ep_states(self, request: Request, user: ApiUser, _body: Any) -> Response:
        self._require(user, "ticket.agent", "admin.object", "ticket.customer")
        return JSONResponse([{k: v for k, v in s.items() if k != "state_type"} for s in self.states])

    def _ep_tickets_index(self, request: Request, user: ApiUser, _body: Any) -> Response:
        per_page = max(1, min(_int_param(request, "per_page", 100), 100))
        page = max(1, _int_param(request, "page", 1))
        visible = [t for _, t in sorted(self.tickets.items()) if self._can_read(user, t)]
        chunk = visible[(page - 1) * per_page : page * per_page]
        if _expand(request):
            return JSONResponse([self._expanded(t) for t in chunk])
        return JSONResponse([self._compact(t) for t in chunk])

    def _ep_tickets_search(self, request: Request, user: ApiUser, _body: Any) -> Response:
        query = request.query_params.get("query") or request.query_params.get("term") or ""
        if "limit" in request.query_params and "per_page" not in request.query_params:
            per_page = _int_param(request, "limit", 50)
        else:
            per_page = _int_param(request, "per_page", 50)
        per_page = max(1, min(per_page, 200))
        page = max(1, _int_param(request, "page", 1))
        try:
            tree = parse_query(query) if query.strip() else None
        except QuerySyntaxError:
            tree = "invalid"
        hits: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if tree != "invalid":
            for ticket_id, ticket in self.tickets.items():
                doc = self._indexed(ticket_id)
                if doc is None or not self._can_read(user, ticket):
                    continue
                if tree is None or evaluate(tree, doc):
                    hits.append((doc, ticket))
        sort_by = request.query_params.get("sort_by", "updated_at")
        descending = request.query_params.get("order_by", "desc").lower() != "asc"

        def key(hit: tuple[dict[str, Any], dict[str, Any]]) -> tuple[Any, int]:
            value = _lookup(hit[0], sort_by)
            if isinstance(value, str) and parse_ts(value) is not None:
                value = parse_ts(value)
            if isinstance(value, dict):
                value = value.get("name")
            return (value if value is not None else "", hit[1]["id"])

        try:
            hits.sort(key=key, reverse=descending)
        except TypeError:
            hits.sort(key=lambda h: h[1]["id"], reverse=descending)
        total = len(hits)
        chunk = [t for _, t in hits[(page - 1) * per_page : page * per_page]]
        with_total = request.query_params.get("with_total_count", "").lower() in ("true", "1")
        if _expand(request):
            records: Any = [self._expanded(t) for t in chunk]
            if with_total:
                records = {"records": records, "total_count": total}
            return JSONResponse(records)
        return JSONResponse({
            "tickets": [t["id"] for t in chunk],
            "tickets_count": len(chunk),
            "assets": {"Ticket": {str(t["id"]): self._compact(t) for t in chunk}},
        })

    def _ep_ticket_show(self, request: Request, user: ApiUser, _body: Any) -> Response:
        ticket = self._find_ticket(user, request.path_params["ticket_id"])
        return JSONResponse(self._expanded(ticket) if _expand(request) else self._compact(ticket))

    def _ep_ticket_update(self, request: Request, user: ApiUser, body: Any) -> Response:
        ticket = self._find_ticket(user, request.path_params["ticket_id"])
        if not isinstance(body, dict):
            return error(422, "Unable to process the request")
        changes: dict[str, Any] = {}
        for kind, rows in (("group", self.groups), ("priority", self.priorities),
                           ("state", self.states)):
            value = self._resolve(kind, rows, body)
            if value is not None and value != ticket[f"{kind}_id"]:
                changes[f"{kind}_id"] = value
        if "title" in body and body["title"] != ticket["title"]:
            changes["title"] = str(body["title"])
        if "article" in body and body["article"] and (
            not isinstance(body["article"], dict) or not str(body["article"].get("body") or "").strip()
        ):
            return error(422, 'Need at least article: { body: "some text" }')
        now = self.now()
        if changes:
            ticket.update(changes)
            if changes.get("state_id") == 4 and ticket["close_at"] is None:
                ticket["close_at"] = now
            ticket["updated_at"] = now
            ticket["updated_by_id"] = user.id
        if body.get("article"):
            self._article_from(ticket["id"], user, body["article"])
            ticket["updated_by_id"] = user.id
        if changes or body.get("article"):
            self._reindex(ticket["id"])
        if _expand(request):
            return JSONResponse(self._expanded(ticket))
        out = self._compact(ticket)
        out["article_ids"] = [a["id"] for a in self._articles_of(ticket["id"])]
        return JSONResponse(out)

    def _ep_articles_by_ticket(self, request: Request, user: ApiUser, _body: Any) -> Response:
        ticket = self._find_ticket(user, request.path_params["ticket_id"])
        return JSONResponse([self._article_json(a) for a in self._articles_of(ticket["id"])])

    def _ep_article_create(self, request: Request, user: ApiUser, body: Any) -> Response:
        if not isinstance(body, dict):
            return error(422, "Unable to process the request")
        if body.get("ticket_id") in (None, ""):
            return error(404, "Couldn't find Ticket without an ID")  # Ticket.find(nil)
        ticket = self._find_ticket(user, body["ticket_id"])
        article = self._article_from(ticket["id"], user, body)
        self._reindex(ticket["id"])
        return JSONResponse(self._article_json(article), status_code=201)


def _expand(request: Request) -> bool:
    return request.query_params.get("expand", "").lower() in ("true", "1")


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


async def _no_route(request: Request, _exc: Exception) -> Response:
    return error(404, f'No route matches [{request.method}] "{request.url.path}"')


# --------------------------------------------------------------------------- serving


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # running in a thread
        pass


@dataclass
class RunningStandin:
    standin: ZammadStandin
    url: str
    _server: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start_standin(standin: ZammadStandin, port: int = 0) -> RunningStandin:
    """Serve ``standin`` on 127.0.0.1 (a free port unless given) in a daemon thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(standin.app, log_level="warning", lifespan="off", date_header=False,
                            server_header=False, access_log=False)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="zammad-standin")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the Zammad stand-in did not start")
        time.sleep(0.01)
    return RunningStandin(standin, f"http://127.0.0.1:{port}", server, thread)


@contextlib.contextmanager
def running_standin(standin: ZammadStandin | None = None, port: int = 0) -> Iterator[RunningStandin]:
    running = start_standin(standin or ZammadStandin(), port)
    try:
        yield running
    finally:
        running.stop()
