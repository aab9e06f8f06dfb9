"""Crash and restart: unfinished claims are reconciled by re-reading the tickets; nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import update

from connector.model.classifier import ClassifierHolder
from connector.pipeline import Pipeline
from connector.store.db import Store, utcnow
from connector.store.decisions import DecisionStore
from connector.store.tables import Decision
from tests.support.fakes import KeywordClassifier, MemoryAdapter, fail_on, make_tickets, system_config


class Crash(Exception):
    """Stands for the process dying at this point."""


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
    adapter.hook = fail_on("update", Crash(f"killed while writing {ticket_id}"), ticket_id)


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


# --------------------------------------------------------------------------- a kill between the fields and the note (issue #11)


def crash_when_noting(adapter: MemoryAdapter, ticket_id: str) -> None:
    """The process dies as it sends ``ticket_id``'s note, after its fields were written (two-request systems)."""
    adapter.hook = fail_on("note", Crash(f"killed while adding the note of {ticket_id}"), ticket_id)


def test_killed_between_the_fields_and_the_note_then_the_note_is_written_once(store: Store) -> None:
    """Issue #11 item 2a: the ticket was moved, the note not written; reconciliation writes it, once."""
    adapter = MemoryAdapter(make_tickets(3))
    crash_when_noting(adapter, "2")
    assert isinstance(asyncio.run(pipeline(store, adapter).poll()).error, Crash)
    assert adapter.tickets["2"].queue == "IT" and "2" not in adapter.notes
    record = DecisionStore(store, "x").get("mem", "2")
    assert record.status == "claimed" and record.note_pending  # recorded as pending before it was sent
    adapter.hook = None
    result = asyncio.run(pipeline(store, adapter).poll())
    assert result.ok and result.reconciled == 1
    assert [len(adapter.notes[t]) for t in ("1", "2", "3")] == [1, 1, 1]
    assert adapter.notes["2"][0].text.endswith(f"[helpdesk-connector decision {record.id}]")
    assert adapter.calls["find_note"] == 1 and adapter.updates["2"] == 1  # looked first; fields not written again
    record = DecisionStore(store, "x").get("mem", "2")
    assert record.status == "applied" and record.applied == {"queue": "IT", "note": True}
    assert "note was written after restart" in record.reason
    # a later poll finds nothing to do
    asyncio.run(pipeline(store, adapter).poll())
    assert len(adapter.notes["2"]) == 1


def test_killed_after_the_note_was_sent_then_no_second_note(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))
    first = pipeline(store, adapter)
    write_note = adapter.add_note

    async def note_then_die(ticket_id: str, note: str, subject: str) -> None:
        await write_note(ticket_id, note, subject)
        if ticket_id == "1":
            raise Crash("killed right after the note request")

    adapter.add_note = note_then_die  # type: ignore[method-assign]
    assert isinstance(asyncio.run(first.poll()).error, Crash)
    adapter.add_note = write_note  # type: ignore[method-assign]
    result = asyncio.run(pipeline(store, adapter).poll())
    assert result.ok and result.reconciled == 1
    assert len(adapter.notes["1"]) == 1  # found by its marker: not written again
    record = DecisionStore(store, "x").get("mem", "1")
    assert record.status == "applied" and "shows the planned values and the note" in record.reason


def test_killed_before_the_note_was_marked_pending_writes_it_without_looking(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))
    first = pipeline(store, adapter)

    def killed(*args, **kwargs):
        raise Crash("killed after the fields, before the note was recorded as pending")

    first.decisions.mark_writing = killed  # type: ignore[method-assign]
    assert isinstance(asyncio.run(first.poll()).error, Crash)
    assert adapter.tickets["1"].queue == "IT" and adapter.notes == {}
    result = asyncio.run(pipeline(store, adapter).poll())
    assert result.ok and result.reconciled == 2
    assert all(len(adapter.notes[t]) == 1 for t in ("1", "2"))
    assert adapter.calls["find_note"] == 0  # surely not sent: no look needed


def test_one_request_system_killed_after_its_write_is_checked_by_marker(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2), note_in_update=True)
    first = pipeline(store, adapter)
    crash_when_recording(first)
    assert isinstance(asyncio.run(first.poll()).error, Crash)
    result = asyncio.run(pipeline(store, adapter).poll())
    assert result.ok and result.reconciled == 2
    assert adapter.calls["find_note"] == 2 and adapter.calls["note"] == 0
    assert all(len(adapter.notes[t]) == 1 for t in ("1", "2")) and adapter.calls["update"] == 2
