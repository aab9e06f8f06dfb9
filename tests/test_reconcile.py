"""Crash and restart: unfinished claims are reconciled by re-reading the tickets; nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from routing_support import KeywordClassifier, MemoryAdapter, make_tickets, sqlite_url, system_config
from sqlalchemy import update

from connector.model.classifier import ClassifierHolder
from connector.pipeline import Pipeline
from connector.store.db import Store, utcnow
from connector.store.decisions import DecisionStore
from connector.store.tables import Decision


class Crash(Exception):
    """Stands for the process dying at this point."""


@pytest.fixture
def store(tmp_path: Path):
    s = Store(sqlite_url(tmp_path))
    yield s
    s.dispose()


def pipeline(store: Store, adapter: MemoryAdapter, instance: str = "host-a", **cfg) -> Pipeline:
    return Pipeline("mem", system_config(max_concurrent_writes=1, **cfg), adapter, DecisionStore(store, instance),
                    ClassifierHolder(KeywordClassifier()), claim_timeout=600)


def crash_when_recording(p: Pipeline) -> None:
    """The process dies after the writes of a page, before their outcomes are stored."""

    def crashing(*args, **kwargs):
        raise Crash("killed while recording outcomes")

    p.decisions.finish_many = crashing  # type: ignore[method-assign]


def crash_when_writing(adapter: MemoryAdapter, ticket_id: str) -> None:
    """The process dies as it starts writing ``ticket_id`` (nothing reaches the helpdesk)."""

    def hook(operation: str, tid: str | None) -> None:
        if operation == "update" and tid == ticket_id:
            raise Crash(f"killed while writing {tid}")

    adapter.hook = hook


def test_crash_after_the_write_before_the_record(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(4))
    first = pipeline(store, adapter)
    crash_when_recording(first)
    result = asyncio.run(first.poll())
    assert isinstance(result.error, Crash)
    assert all(adapter.updates[str(i)] == 1 for i in range(1, 5))  # written, not recorded
    assert DecisionStore(store, "x").counts()["mem"] == {"claimed": 4}
    # restart (same instance id): reconciliation sees the planned values on the tickets
    second = pipeline(store, adapter)
    result = asyncio.run(second.poll())
    assert result.ok and result.reconciled == 4
    record = DecisionStore(store, "x").get("mem", "2")
    assert record.status == "applied" and "shows the planned values" in record.reason
    assert all(adapter.updates[str(i)] == 1 for i in range(1, 5))  # nobody written twice
    assert all(len(adapter.notes[str(i)]) == 1 for i in range(1, 5))


def test_crash_before_the_write(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))
    first = pipeline(store, adapter)
    crash_when_writing(adapter, "2")
    assert isinstance(asyncio.run(first.poll()).error, Crash)
    assert adapter.updates["2"] == 0
    assert DecisionStore(store, "x").counts()["mem"] == {"applied": 2, "claimed": 1}
    adapter.hook = None
    second = pipeline(store, adapter)
    result = asyncio.run(second.poll())
    assert result.ok and result.reconciled == 1
    record = DecisionStore(store, "x").get("mem", "2")
    assert record.status == "applied" and "write finished after restart" in record.reason
    assert adapter.updates["2"] == 1 and adapter.tickets["2"].queue == "IT"


def test_ticket_changed_by_a_human_while_the_daemon_was_down(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))
    first = pipeline(store, adapter)
    crash_when_writing(adapter, "1")
    asyncio.run(first.poll())
    adapter.hook = None
    adapter.tickets["1"] = replace(adapter.tickets["1"], queue="HR")  # an agent moved it meanwhile
    result = asyncio.run(pipeline(store, adapter).poll())
    assert result.reconciled == 1
    record = DecisionStore(store, "x").get("mem", "1")
    assert record.status == "changed" and "queue changed" in record.reason
    assert adapter.updates["1"] == 0 and adapter.tickets["1"].queue == "HR"


def test_suggest_mode_interrupted_write_is_not_repeated(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(1))
    first = pipeline(store, adapter, mode="suggest")
    crash_when_recording(first)
    asyncio.run(first.poll())
    assert len(adapter.notes["1"]) == 1
    asyncio.run(pipeline(store, adapter, mode="suggest").poll())
    assert len(adapter.notes["1"]) == 1  # no duplicate note
    assert DecisionStore(store, "x").get("mem", "1").status == "suggested"


def test_stale_claim_of_another_instance_is_taken_over(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))
    crashed = pipeline(store, adapter, instance="host-a")
    crash_when_writing(adapter, "1")
    asyncio.run(crashed.poll())
    adapter.hook = None
    other = pipeline(store, adapter, instance="host-b")
    result = asyncio.run(other.poll())
    assert result.reconciled == 0  # host-a's claim is fresh: host-a may still be working on it
    assert DecisionStore(store, "x").get("mem", "1").status == "claimed"
    with store.session() as s:
        s.execute(update(Decision).values(claimed_at=utcnow() - timedelta(hours=1)))
    result = asyncio.run(other.poll())
    assert result.reconciled == 1
    record = DecisionStore(store, "x").get("mem", "1")
    assert record.status == "applied" and record.claimed_by == "host-b"
    assert adapter.updates["1"] == 1
