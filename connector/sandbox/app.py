"""The sandbox helpdesk's REST API (FastAPI), documented in ``docs/sandbox.md``.

All routes live under ``/api``; ``/api/health`` is always open, every other
route needs ``Authorization: Bearer <token>`` when the sandbox was started with
a token.  Errors are JSON: ``{"error": {"code": ..., "message": ...}}`` with
404 (no such ticket), 422 (unknown queue/priority/state, code
``unknown_value``), 409 (``if_version`` mismatch), 400 (malformed request) and
401 (missing or wrong token).

For tests of error handling, :class:`FaultInjector` makes chosen requests
answer an error status, a non-JSON body or a delay instead (``/_sandbox/faults``
or ``SandboxHandle.faults``).
"""

from __future__ import annotations

import asyncio
import hmac
import random
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.sandbox.db import (
    SandboxDB,
    TicketNotFound,
    TicketRow,
    UnknownValue,
    VersionConflict,
    parse_time,
)

MAX_PER_PAGE = 1000


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """Answer matching requests with this instead of the real thing (``times`` < 0: forever)."""

    path: str = ".*"
    method: str = "*"
    status: int = 500
    #: text, or bytes (e.g. invalid UTF-8)
    body: str | bytes = '{"error": {"code": "injected", "message": "injected fault"}}'
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: seconds to wait before answering (a delay alone, with status 0, then serves the real answer)
    delay: float = 0.0
    times: int = 1
    #: the share of matching requests that get the fault (1.0: every one); the others are served normally
    probability: float = 1.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method) and re.search(self.path, path) is not None

    def strikes(self) -> bool:
        return self.probability >= 1.0 or random.random() < self.probability


class FaultInjector:
    """A thread-safe list of :class:`Fault` rules, consulted before every request."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.hits = 0

    def add(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        fault = fault or Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        return len(self._faults)

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if not fault.strikes():
                        continue
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    self.hits += 1
                    return fault
        return None


class FaultMiddleware:
    """Pure ASGI middleware (cheap when no fault is set) serving injected faults."""

    def __init__(self, app: ASGIApp, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.faults or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        fault = self.faults.take(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status == 0:
            await self.app(scope, receive, send)
            return
        response = Response(fault.body, status_code=fault.status, media_type=fault.content_type, headers=fault.headers)
        await response(scope, receive, send)


class BearerAuthMiddleware:
    """Pure ASGI check of ``Authorization: Bearer <token>`` on every ``/api`` route but health."""

    def __init__(self, app: ASGIApp, expected: bytes) -> None:
        self.app = app
        self.expected = expected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/api/") and path != "/api/health":
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    response = _error(401, "unauthorized", "missing or wrong bearer token")
                    response.headers["WWW-Authenticate"] = 'Bearer realm="sandbox"'
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- request bodies


class TicketCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str
    body: str = ""
    queue: str | None = None
    priority: str | None = None
    state: str | None = None


class TicketUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = None
    priority: str | None = None
    state: str | None = None
    subject: str | None = None
    body: str | None = None
    #: only update when the ticket is still at this version (else 409)
    if_version: int | None = None


class TicketResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = None
    priority: str | None = None
    state: Literal["resolved", "closed"] = "resolved"


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str
    subject: str = ""
    internal: bool = True
    author: str = "api"


class FaultCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = ".*"
    method: str = "*"
    status: int = Field(500, ge=0, le=599)
    body: str = '{"error": {"code": "injected", "message": "injected fault"}}'
    content_type: str = "application/json"
    headers: dict[str, str] = Field(default_factory=dict)
    delay: float = Field(0.0, ge=0, le=600)
    times: int = 1
    probability: float = Field(1.0, gt=0, le=1)


# --------------------------------------------------------------------------- helpers


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def _ticket(row: TicketRow) -> dict[str, Any]:
    return asdict(row)


def _time_param(name: str, value: str | None) -> Any:
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise _BadRequest(f"{name}: not an ISO 8601 time or epoch seconds: {value!r}") from None


class _BadRequest(Exception):
    pass


def _page(
    rows: list[TicketRow], total: int, more: bool, *, page: int, per_page: int, offset: int, after_id: int | None
) -> JSONResponse:
    return JSONResponse(
        {
            "items": [_ticket(r) for r in rows],
            "total": total,
            "page": page,
            "per_page": per_page,
            "offset": offset,
            "has_more": more,
            "next_page": page + 1 if more and after_id is None else None,
            "next_offset": offset + len(rows) if more and after_id is None else None,
            "next_after_id": rows[-1].id if more and rows else None,
        }
    )


# --------------------------------------------------------------------------- app


def _db(request: Request) -> SandboxDB:
    return request.app.state.db  # type: ignore[no-any-return]


def _faults(request: Request) -> FaultInjector:
    return request.app.state.faults  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class _Paging:
    """A list request's page: number, size, first row, and the keyset position (``after_id``)."""

    page: int
    size: int
    start: int
    after_id: int | None


def _paging(
    page: int = Query(1, ge=1),
    per_page: int = Query(50, ge=1, le=MAX_PER_PAGE),
    offset: int | None = Query(None, ge=0),
    limit: int | None = Query(None, ge=1, le=MAX_PER_PAGE),
    after_id: int | None = Query(None, ge=0),
) -> _Paging:
    size = limit if limit is not None else per_page
    start = offset if offset is not None else (page - 1) * size
    page = start // size + 1 if offset is not None else page
    return _Paging(page, size, 0 if after_id is not None else start, after_id)


def _listed(db: SandboxDB, p: _Paging, **filters: Any) -> JSONResponse:
    rows, total, more = db.list_tickets(**filters, after_id=p.after_id, offset=p.start, limit=p.size)
    return _page(rows, total, more, page=p.page, per_page=p.size, offset=p.start, after_id=p.after_id)


_Db = Annotated[SandboxDB, Depends(_db)]
_Pg = Annotated[_Paging, Depends(_paging)]

meta = APIRouter(prefix="/api", tags=["meta"])
tickets = APIRouter(prefix="/api/tickets", tags=["tickets"])
notes = APIRouter(prefix="/api/tickets", tags=["notes"])
testing = APIRouter(prefix="/_sandbox", tags=["testing"])


@meta.get("/health")
async def health(db: _Db) -> JSONResponse:
    return JSONResponse({"status": "ok", "tickets": db.count_tickets()})


@meta.get("/queues")
async def queues(db: _Db) -> JSONResponse:
    return JSONResponse({"items": [{"name": n} for n in db.queues()]})


@meta.post("/queues", status_code=201)
async def add_queue(body: QueueCreate, db: _Db) -> JSONResponse:
    """Append a queue: 201 when new, 200 when it already exists."""
    created = db.add_queue(body.name)
    return JSONResponse({"name": body.name}, status_code=201 if created else 200)


@meta.get("/priorities")
async def priorities(db: _Db) -> JSONResponse:
    return JSONResponse({"items": [{"name": n} for n in db.priorities()]})


@meta.get("/states")
async def states(db: _Db) -> JSONResponse:
    return JSONResponse({"items": [{"name": n} for n in db.states()]})


@tickets.get("")
async def list_tickets(
    db: _Db,
    paging: _Pg,
    queue: list[str] = Query(default=[]),
    state: list[str] = Query(default=[]),
    priority: list[str] = Query(default=[]),
    updated_since: str | None = None,
    resolved_since: str | None = None,
) -> JSONResponse:
    return _listed(
        db,
        paging,
        queues=queue,
        states=state,
        priorities=priority,
        updated_since=_time_param("updated_since", updated_since),
        resolved_since=_time_param("resolved_since", resolved_since),
    )


@tickets.get("/resolved")
async def list_resolved(db: _Db, paging: _Pg, resolved_since: str | None = None) -> JSONResponse:
    return _listed(db, paging, resolved_only=True, resolved_since=_time_param("resolved_since", resolved_since))


@tickets.post("", status_code=201)
async def create_ticket(body: TicketCreate, db: _Db) -> JSONResponse:
    row = db.create_ticket(body.subject, body.body, queue=body.queue, priority=body.priority, state=body.state)
    return JSONResponse(_ticket(row), status_code=201)


@tickets.get("/{ticket_id}")
async def get_ticket(ticket_id: int, db: _Db) -> JSONResponse:
    return JSONResponse(_ticket(db.get_ticket(ticket_id)))


@tickets.patch("/{ticket_id}")
async def update_ticket(ticket_id: int, body: TicketUpdate, db: _Db) -> JSONResponse:
    row = db.update_ticket(ticket_id, **body.model_dump(exclude_none=True))
    return JSONResponse(_ticket(row))


@tickets.post("/{ticket_id}/resolve")
async def resolve_ticket(ticket_id: int, db: _Db, body: TicketResolve | None = None) -> JSONResponse:
    body = body or TicketResolve()
    row = db.resolve_ticket(ticket_id, queue=body.queue, priority=body.priority, state=body.state)
    return JSONResponse(_ticket(row))


@notes.get("/{ticket_id}/notes")
async def list_notes(ticket_id: int, db: _Db) -> JSONResponse:
    return JSONResponse({"items": [asdict(n) for n in db.list_notes(ticket_id)]})


@notes.post("/{ticket_id}/notes", status_code=201)
async def add_note(ticket_id: int, body: NoteCreate, db: _Db) -> JSONResponse:
    note = db.add_note(ticket_id, body.body, subject=body.subject, internal=body.internal, author=body.author)
    return JSONResponse(asdict(note), status_code=201)


@testing.post("/faults", status_code=201)
async def add_fault(body: FaultCreate, faults: Annotated[FaultInjector, Depends(_faults)]) -> JSONResponse:
    faults.add(Fault(**body.model_dump()))
    return JSONResponse({"ok": True}, status_code=201)


@testing.get("/faults")
async def fault_hits(faults: Annotated[FaultInjector, Depends(_faults)]) -> JSONResponse:
    """How many requests got an injected fault so far."""
    return JSONResponse({"hits": faults.hits, "active": len(faults)})


@testing.delete("/faults")
async def clear_faults(faults: Annotated[FaultInjector, Depends(_faults)]) -> JSONResponse:
    faults.clear()
    return JSONResponse({"ok": True})


def _add_error_handlers(app: FastAPI) -> None:
    """The sandbox's error answers: ``{"error": code, "message": ..., **details}`` with 400/404/409/422."""

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    async def unknown(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UnknownValue)
        return _error(422, "unknown_value", str(exc), field=exc.field, value=exc.value, allowed=exc.allowed)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VersionConflict)
        return _error(409, "version_conflict", str(exc), expected=exc.expected, actual=exc.actual)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _error(400, "invalid_request", "; ".join(problems))

    async def bad(_: Request, exc: Exception) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    app.add_exception_handler(TicketNotFound, not_found)
    app.add_exception_handler(UnknownValue, unknown)
    app.add_exception_handler(VersionConflict, conflict)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(_BadRequest, bad)


def create_app(db: SandboxDB, *, token: str | None = None, faults: FaultInjector | None = None) -> FastAPI:
    """The sandbox's ASGI app over ``db``; ``token`` turns on bearer-token auth."""
    app = FastAPI(
        title="helpdesk-connector sandbox helpdesk",
        version="1",
        description="A small helpdesk for trying helpdesk-connector; see docs/sandbox.md.",
    )
    faults = faults if faults is not None else FaultInjector()
    app.state.db = db
    app.state.faults = faults
    if token:
        app.add_middleware(BearerAuthMiddleware, expected=f"Bearer {token}".encode())
    app.add_middleware(FaultMiddleware, faults=faults)
    _add_error_handlers(app)
    for router in (meta, tickets, notes, testing):
        app.include_router(router)
    return app
