"""Shared fakes of the learning-loop tests: an in-memory helpdesk adapter and config/store builders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.base import Adapter, AdapterSettings, Ticket, TicketChange, TicketPage, TransientError
from connector.config import AppConfig
from connector.store.db import Store, utcnow
from connector.store.tables import Decision

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeSettings(AdapterSettings):
    pass


class FakeAdapter(Adapter):
    """Resolved tickets from a list, paged with an offset cursor; can fail after some pages."""

    settings_model = FakeSettings

    def __init__(
        self,
        tickets: list[Ticket],
        *,
        fail_after_pages: int | None = None,
        page_delay: float = 0.0,
        listing_without_body: bool = False,
    ) -> None:
        super().__init__("fake", FakeSettings(), source_queues=[], source_states=[])
        self.tickets = tickets
        self.fail_after_pages = fail_after_pages
        self.page_delay = page_delay
        self.listing_without_body = listing_without_body
        self.calls: list[tuple[datetime | None, str | None]] = []
        self.pages_served = 0

    async def list_resolved_tickets(
        self, since: datetime | None, cursor: str | None, page_size: int
    ) -> AsyncIterator[TicketPage]:
        self.calls.append((since, cursor))
        matching = [t for t in self.tickets if since is None or (t.updated_at is not None and t.updated_at > since)]
        start = int(cursor or 0)
        while start < len(matching):
            if self.fail_after_pages is not None and self.pages_served >= self.fail_after_pages:
                raise TransientError("helpdesk went away")
            if self.page_delay:
                await asyncio.sleep(self.page_delay)
            chunk = matching[start : start + page_size]
            start += len(chunk)
            self.pages_served += 1
            if self.listing_without_body:
                chunk = [replace(t, body=None) for t in chunk]
            yield TicketPage(chunk, str(start))

    async def get_ticket(self, ticket_id: str) -> Ticket:
        return next(t for t in self.tickets if t.id == ticket_id)

    def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        raise NotImplementedError

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        raise NotImplementedError

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        raise NotImplementedError

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        raise NotImplementedError

    async def list_queues(self) -> list[str]:
        return sorted({t.queue for t in self.tickets if t.queue})

    async def list_priorities(self) -> list[str]:
        return sorted({t.priority for t in self.tickets if t.priority})


QUEUE_WORDS = {
    "Hardware": "printer laptop screen broken",
    "Access": "password vpn login account access",
    "HR": "salary holiday contract hr",
}


def make_tickets(n: int, *, start: int = 1, t0: datetime = T0) -> list[Ticket]:
    queues = list(QUEUE_WORDS)
    out = []
    for i in range(start, start + n):
        queue = queues[i % len(queues)]
        out.append(
            Ticket(
                id=str(i),
                subject=f"{QUEUE_WORDS[queue].split()[0]} problem {i}",
                body=f"{QUEUE_WORDS[queue]} please help, call me on +49 30 1234{i:04d}",
                queue=queue,
                priority="high" if i % 4 == 0 else "normal",
                state="resolved",
                updated_at=t0 + timedelta(minutes=i),
            )
        )
    return out


def make_config(tmp_path: Path, **learning: Any) -> AppConfig:
    return AppConfig(
        state_dir=tmp_path / "var",
        systems={"fake": {"type": "generic_rest", "page_size": 10, "routing": {"queue": {"map": {"*": "{label}"}}}}},
        learning={"enabled": True, **learning},
    )


def make_store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def add_decision(store: Store, ticket_id: str, applied: dict[str, Any], *, status: str = "applied", system: str = "fake") -> None:
    now = utcnow()
    with store.session() as s:
        s.add(
            Decision(
                system=system,
                ticket_id=ticket_id,
                status=status,
                mode="apply",
                claimed_by="test",
                claimed_at=now,
                decided_at=now,
                model_version="tiny-1",
                predictions={},
                original={},
                planned=dict(applied),
                applied=dict(applied) if status == "applied" else {},
                attempts=1,
            )
        )
