"""Helpers for the routing-engine tests: an in-memory adapter, a trivial classifier, config builders."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from adapters.base import (
    Adapter,
    AdapterSettings,
    NotFoundError,
    Ticket,
    TicketChange,
    TicketPage,
    UnknownValueError,
)
from connector.config import SystemConfig
from connector.model.classifier import FieldPrediction, LabelScore, Prediction


class MemorySettings(AdapterSettings):
    pass


@dataclass
class Note:
    subject: str
    text: str


class MemoryAdapter(Adapter):
    """An in-memory helpdesk.  Counts calls; hooks let a test change tickets or fail calls."""

    settings_model = MemorySettings

    def __init__(
        self,
        tickets: Sequence[Ticket] = (),
        *,
        queues: Sequence[str] = ("Inbox", "IT", "HR", "Finance", "Triage"),
        priorities: Sequence[str] = ("low", "normal", "high"),
        source_queues: Sequence[str] = ("Inbox",),
        source_states: Sequence[str] = ("new",),
        list_bodies: bool = True,
        latency: float = 0.0,
        name: str = "mem",
        note_in_update: bool = False,
    ) -> None:
        super().__init__(name, MemorySettings(), source_queues=list(source_queues), source_states=list(source_states))
        self.tickets: dict[str, Ticket] = {t.id: t for t in tickets}
        self.queues = list(queues)
        self.priorities = list(priorities)
        self.list_bodies = list_bodies
        self.latency = latency
        #: False (default): fields and note are two requests, as in Request Tracker; True: one, as in OTOBO/Zammad
        self.note_in_update = note_in_update
        self.notes: dict[str, list[Note]] = {}
        self.calls: Counter[str] = Counter()
        self.updates: Counter[str] = Counter()
        #: called with (operation, ticket_id) before each call; may raise or mutate
        self.hook: Callable[[str, str | None], None] | None = None

    async def _enter(self, operation: str, ticket_id: str | None = None) -> None:
        self.calls[operation] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        else:
            await asyncio.sleep(0)
        if self.hook is not None:
            self.hook(operation, ticket_id)

    async def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        candidates = sorted(
            (t for t in self.tickets.values() if self.is_candidate(t)), key=lambda t: int(t.id) if t.id.isdigit() else 0
        )
        for start in range(0, len(candidates), page_size):
            await self._enter("list")
            chunk = candidates[start : start + page_size]
            if not self.list_bodies:
                chunk = [replace(t, body=None) for t in chunk]
            yield TicketPage(chunk, cursor=f"page-{start // page_size}")

    async def get_ticket(self, ticket_id: str) -> Ticket:
        await self._enter("get", ticket_id)
        try:
            return self.tickets[ticket_id]
        except KeyError:
            raise NotFoundError(f"ticket {ticket_id} not found", system=self.name) from None

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        await self._enter("update", ticket_id)
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise NotFoundError(f"ticket {ticket_id} not found", system=self.name)
        if change.queue is not None and change.queue not in self.queues:
            raise UnknownValueError(f"queue {change.queue!r} does not exist", system=self.name)
        if change.priority is not None and change.priority not in self.priorities:
            raise UnknownValueError(f"priority {change.priority!r} does not exist", system=self.name)
        self.tickets[ticket_id] = replace(
            ticket,
            queue=change.queue if change.queue is not None else ticket.queue,
            priority=change.priority if change.priority is not None else ticket.priority,
        )
        self.updates[ticket_id] += 1
        if change.note is not None:
            if self.note_in_update:
                self.notes.setdefault(ticket_id, []).append(Note(change.note_subject, change.note))
            else:
                await self.add_note(ticket_id, change.note, change.note_subject)

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        await self._enter("note", ticket_id)
        if ticket_id not in self.tickets:
            raise NotFoundError(f"ticket {ticket_id} not found", system=self.name)
        self.notes.setdefault(ticket_id, []).append(Note(subject, note))

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        await self._enter("find_note", ticket_id)
        return any(marker in n.text for n in self.notes.get(ticket_id, []))

    async def list_resolved_tickets(
        self, since: datetime | None, cursor: str | None, page_size: int
    ) -> AsyncIterator[TicketPage]:
        if False:  # pragma: no cover
            yield TicketPage([])

    async def list_queues(self) -> list[str]:
        await self._enter("queues")
        return list(self.queues)

    async def list_priorities(self) -> list[str]:
        await self._enter("priorities")
        return list(self.priorities)


def make_tickets(n: int, *, start: int = 1, body: str | None = "my printer is broken please help") -> list[Ticket]:
    return [
        Ticket(id=str(i), subject=f"ticket {i}", body=body, queue="Inbox", priority="normal", state="new")
        for i in range(start, start + n)
    ]


class KeywordClassifier:
    """A trivial, instant classifier: label by keyword, fixed confidence."""

    def __init__(self, confidence: float = 0.95, version: str = "kw-1") -> None:
        self.confidence = confidence
        self._version = version
        self.calls = 0
        self.texts: list[str] = []

    @property
    def fields(self) -> tuple[str, ...]:
        return ("queue", "priority")

    @property
    def version(self) -> str:
        return f"queue={self._version},priority={self._version}"

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        self.texts.extend(texts)
        out = []
        for text in texts:
            lower = text.lower()
            queue = "hr" if "holiday" in lower else "finance" if "invoice" in lower else "it"
            priority = "high" if "urgent" in lower else "normal"
            out.append(
                Prediction(
                    {
                        "queue": FieldPrediction(queue, self.confidence, (LabelScore(queue, self.confidence),)),
                        "priority": FieldPrediction(priority, self.confidence, (LabelScore(priority, self.confidence),)),
                    },
                    self.version,
                )
            )
        return out


def system_config(**overrides: Any) -> SystemConfig:
    data: dict[str, Any] = {
        "type": "generic_rest",
        "connection": {},
        "source": {"queues": ["Inbox"], "states": ["new"]},
        "poll_interval": 1,
        "page_size": 10,
        "max_concurrent_writes": 4,
        "mode": "apply",
        "routing": {
            "queue": {"map": {"it": "IT", "hr": "HR", "finance": "Finance"}, "threshold": 0.5},
            "priority": {"map": {"*": "{label}"}, "threshold": 0.5},
        },
    }
    data.update(overrides)
    return SystemConfig.model_validate(data)


def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


async def daemon_polls(
    cfg: Any, store: Any, count: int = 1, between: Any = None, classifier: Any = None, *, system: str
) -> list[Any]:
    """``count`` polls of ``system`` by one daemon (``between(i)`` runs after poll i), then close."""
    from connector.daemon import Daemon
    from connector.model.classifier import ClassifierHolder

    daemon = Daemon(cfg, store=store, holder=ClassifierHolder(classifier or KeywordClassifier()))
    await daemon.setup()
    results = []
    try:
        for i in range(count):
            result = await daemon.poll_system(system, force=True)
            assert result is not None
            results.append(result)
            if between is not None:
                between(i)
    finally:
        await daemon.close()
    return results


def decision_counts(store: Any, system: str) -> dict[str, int]:
    """Decisions of ``system`` by status."""
    from connector.store.decisions import DecisionStore

    return DecisionStore(store, "x").counts().get(system, {})


# --------------------------------------------------------------------------- PostgreSQL

PG_ADMIN_URL = os.environ.get("HC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> str | None:
    """None when the PostgreSQL test server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any connection problem means: skip
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.__class__.__name__}"


@contextmanager
def temporary_database(backend: str, tmp_path: Any, label: str) -> Iterator[str]:
    """A store URL for one test: an SQLite file under ``tmp_path`` (``backend="sqlite"``), or a fresh PostgreSQL
    database dropped afterwards (``"postgresql"``; the test is skipped when no server answers)."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path)
        return
    reason = pg_available()
    if reason:
        import pytest

        pytest.skip(reason)
    db = PgDatabase(label)
    try:
        yield db.url
    finally:
        db.drop()


class PgDatabase:
    """A fresh database for one test, dropped afterwards."""

    def __init__(self, label: str) -> None:
        import psycopg

        safe = "".join(c if c.isalnum() else "_" for c in label.lower())[:30]
        self.name = f"hc_routing_{safe}_{uuid.uuid4().hex[:8]}"
        self._psycopg = psycopg
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def drop(self) -> None:
        with self._psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
