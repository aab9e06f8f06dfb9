"""Helpers of the learning-loop tests: resolved tickets (for :class:`tests.support.fakes.MemoryAdapter`), a store, decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.base import Ticket
from connector.config import AppConfig
from connector.store.db import Store, utcnow
from connector.store.tables import Decision
from tests.support.config import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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


def learning_config(tmp_path: Path, **learning: Any) -> AppConfig:
    """The learning loop enabled for one system ``fake`` (an adapter factory stands in for its helpdesk)."""
    return make_config(
        tmp_path,
        state="var",
        validated=False,
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
