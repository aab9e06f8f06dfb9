"""The tests' fakes: one in-memory helpdesk (the whole :class:`adapters.base.Adapter` interface), a trivial
classifier, ticket and system-config builders, and daemon helpers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
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
    """An in-memory helpdesk.  Counts calls; hooks let a test change tickets or fail calls.

    New tickets (state in ``source_states``, queue in ``source_queues``) are listed in id order; resolved ones
    (state in ``resolved_states``, changed after ``since``) in list order with an offset cursor, each listing
    request recorded in ``resolved_listings``.  ``latency`` delays every call (a page of a listing is one call).
    """

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
        resolved_states: Sequence[str] = ("resolved", "closed"),
    ) -> None:
        super().__init__(name, MemorySettings(), source_queues=list(source_queues), source_states=list(source_states))
        self.tickets: dict[str, Ticket] = {t.id: t for t in tickets}
        self.resolved_states = frozenset(resolved_states)
        #: (since, cursor) of each resolved-tickets listing
        self.resolved_listings: list[tuple[datetime | None, str | None]] = []
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
        self.resolved_listings.append((since, cursor))
        matching = [
            t for t in self.tickets.values()
            if t.state in self.resolved_states and (since is None or (t.updated_at is not None and t.updated_at > since))
        ]
        start = int(cursor or 0)
        while start < len(matching):
            await self._enter("list_resolved")
            chunk = matching[start : start + page_size]
            start += len(chunk)
            if not self.list_bodies:
                chunk = [replace(t, body=None) for t in chunk]
            yield TicketPage(chunk, str(start))

    async def list_queues(self) -> list[str]:
        await self._enter("queues")
        return list(self.queues)

    async def list_priorities(self) -> list[str]:
        await self._enter("priorities")
        return list(self.priorities)


def fail_on(operation: str, error: BaseException, ticket_id: str | None = None) -> Callable[[str, str | None], None]:
    """A :attr:`MemoryAdapter.hook` that raises ``error`` at each ``operation`` call (on ``ticket_id`` only, if given)."""

    def hook(called: str, called_ticket: str | None) -> None:
        if called == operation and (ticket_id is None or called_ticket == ticket_id):
            raise error

    return hook


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
