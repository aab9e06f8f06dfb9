"""The decisions / poll_state repository on SQLite and on PostgreSQL (fresh database per test)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from connector.store.db import Store, utcnow
from connector.store.decisions import DecisionStatus, DecisionStore, FinalRecord, NewDecision, Outcome
from connector.store.leases import LeaseStore
from connector.store.tables import Decision, InstanceLease


def new(ticket_id: str, system: str = "rt", **kw) -> NewDecision:
    return NewDecision(system=system, ticket_id=ticket_id, mode="apply", model_version="v1",
                       predictions={"queue": {"label": "it", "confidence": 0.9}},
                       original={"queue": "Inbox"}, planned={"queue": "IT"}, **kw)


def test_claim_is_exclusive_and_finish_records_the_outcome(store: Store) -> None:
    a = DecisionStore(store, "a")
    b = DecisionStore(store, "b")
    assert a.claim(new("1"))
    assert not b.claim(new("1"))  # the unique (system, ticket_id) row
    assert not a.claim(new("1"))
    assert b.claim(new("1", system="other"))  # another system's ticket 1 is another ticket
    assert not b.finish("rt", "1", "applied")  # not b's claim
    assert a.finish("rt", "1", "applied", applied={"queue": "IT"}, reason="ok")
    record = a.get("rt", "1")
    assert record is not None
    assert (record.status, record.claimed_by, record.applied, record.reason) == ("applied", "a", {"queue": "IT"}, "ok")
    assert record.decided_at is not None and record.decided_at.tzinfo is not None
    assert record.predictions["queue"]["label"] == "it"
    assert not a.finish("rt", "1", "failed")  # finished once
    with pytest.raises(ValueError):
        a.finish("rt", "1", "claimed")


def test_record_final_decisions_and_decided_filter(store: Store) -> None:
    d = DecisionStore(store, "a")
    assert d.record(new("1"), "dry_run", reason="dry-run")
    assert d.record(new("2"), "skipped")
    assert not d.record(new("2"), "failed")
    assert d.claim(new("3"))
    assert d.decided_ids("rt", ["1", "2", "3", "4", "1"]) == {"1", "2", "3"}
    assert d.decided_ids("rt", [str(i) for i in range(1200)]) == {"1", "2", "3"}  # chunked IN lists
    assert d.counts() == {"rt": {"dry_run": 1, "skipped": 1, "claimed": 1}}
    assert [r.ticket_id for r in d.recent("rt", limit=2)] == ["3", "2"]


def test_release_and_forget_failed(store: Store) -> None:
    d = DecisionStore(store, "a")
    d.claim(new("1"))
    assert DecisionStore(store, "b").release("rt", "1") is False
    assert d.release("rt", "1") is True
    assert d.decided_ids("rt", ["1"]) == set()
    d.record(new("2"), "failed", error="UnknownValueError: queue 'X'")
    assert d.forget_failed("rt") == 1
    assert d.decided_ids("rt", ["2"]) == set()


def test_unfinished_own_and_stale_foreign_claims_are_taken_over_once(store: Store) -> None:
    a = DecisionStore(store, "a")
    b = DecisionStore(store, "b")
    c = DecisionStore(store, "c")
    a.claim(new("1"))
    b.claim(new("2"))
    b.claim(new("3"))
    # b's claim of ticket 3 is old: b crashed long ago
    with store.session() as s:
        s.execute(update(Decision).where(Decision.ticket_id == "3").values(claimed_at=utcnow() - timedelta(hours=2)))
    mine = a.unfinished("rt", claim_timeout=900)
    assert sorted(r.ticket_id for r in mine) == ["1", "3"]
    assert a.get("rt", "3").claimed_by == "a"  # taken over
    assert [r.ticket_id for r in c.unfinished("rt", claim_timeout=900)] == []  # 2 is fresh, 3 is a's now
    assert not a.get("rt", "1").note_pending
    a.mark_writing("rt", "1")  # the note is about to be sent: from now on it may be on the ticket
    record = a.get("rt", "1")
    assert record.attempts == 1 and record.note_pending and record.applied == {"note": "pending"}


def age_claim(store: Store, ticket_id: str, hours: float = 2) -> None:
    with store.session() as s:
        s.execute(update(Decision).where(Decision.ticket_id == ticket_id)
                  .values(claimed_at=utcnow() - timedelta(hours=hours)))


def test_a_live_instances_claims_are_never_taken_over_however_old(store: Store) -> None:
    LeaseStore(store, "b", ttl=60).acquire()  # b is running
    a = DecisionStore(store, "a")
    b = DecisionStore(store, "b")
    b.claim(new("1"))
    b.mark_writing("rt", "1")  # b is writing ticket 1 right now
    age_claim(store, "1")  # a slow write, or a claim older than claim_timeout
    assert a.unfinished("rt", claim_timeout=900) == []
    assert a.get("rt", "1").claimed_by == "b"
    assert [r.ticket_id for r in b.unfinished("rt", claim_timeout=900)] == ["1"]  # its own, still


def test_an_expired_owners_claims_are_taken_over_at_once(store: Store) -> None:
    LeaseStore(store, "b", ttl=60).acquire()
    b = DecisionStore(store, "b")
    b.claim(new("1"))  # fresh: no age needed once b's lease is gone
    with store.session() as s:
        s.execute(update(InstanceLease).where(InstanceLease.instance_id == "b")
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    a = DecisionStore(store, "a")
    assert [r.ticket_id for r in a.unfinished("rt", claim_timeout=900)] == ["1"]
    assert a.get("rt", "1").claimed_by == "a"


def test_a_cleanly_stopped_owners_claims_are_taken_over_at_once(store: Store) -> None:
    lease = LeaseStore(store, "b", ttl=60)
    lease.acquire()
    DecisionStore(store, "b").claim(new("1"))  # abandoned after shutdown_timeout
    lease.release()
    a = DecisionStore(store, "a")
    assert [r.ticket_id for r in a.unfinished("rt", claim_timeout=900)] == ["1"]


def test_concurrent_claims_from_threads_have_one_winner(store: Store) -> None:
    winners: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        d = DecisionStore(store, name)
        for i in range(40):
            if d.claim(new(str(i))):
                with lock:
                    winners.append(f"{i}")

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(winners, key=int) == [str(i) for i in range(40)]


def test_cursor_and_poll_health(store: Store) -> None:
    d = DecisionStore(store, "a")
    assert d.get_cursor("rt") is None
    d.set_cursor("rt", "2026-01-01T00:00:00Z")
    assert d.get_cursor("rt") == "2026-01-01T00:00:00Z"
    d.poll_started("rt")
    assert d.poll_failed("rt", "TransientError: connection refused") == 1
    assert d.poll_failed("rt", "TransientError: connection refused") == 2
    h = d.health()["rt"]
    assert h.consecutive_failures == 2 and h.last_error == "TransientError: connection refused"
    assert h.last_poll_at is not None and h.last_success_at is None
    d.poll_succeeded("rt")
    h = d.health()["rt"]
    assert h.consecutive_failures == 0 and h.last_success_at is not None
    assert h.cursor == "2026-01-01T00:00:00Z"
    # another daemon creating the same poll_state row concurrently is harmless
    DecisionStore(store, "b").poll_started("new-system")
    d.poll_started("new-system")
    assert set(d.health()) == {"rt", "new-system"}


def test_batched_claims_records_finishes_and_releases(store: Store) -> None:
    a = DecisionStore(store, "a")
    b = DecisionStore(store, "b")
    assert a.claim(new("2"))
    won = b.claim_many([new("1"), new("2"), new("3")], [FinalRecord(new("4"), Outcome("4", DecisionStatus.DRY_RUN, "dry-run")),
                                                       FinalRecord(new("5"), Outcome("5", "failed", "cannot read",
                                                                                     "ProtocolError: x"))])
    assert set(won) == {"1", "3", "4", "5"}  # 2 was a's
    assert all(b.get("rt", t).id == won[t] for t in won)  # each with its decision's id (the note's marker)
    assert b.get("rt", "2").claimed_by == "a"
    assert b.get("rt", "5").error == "ProtocolError: x" and b.get("rt", "5").decided_at is not None
    assert b.claim_many([new("1")]) == {}
    with pytest.raises(ValueError):
        b.claim_many([], [FinalRecord(new("9"), Outcome("9", "claimed"))])
    with pytest.raises(ValueError):
        b.finish_many("rt", [Outcome("1", "claimed")])
    assert b.finish_many("rt", [Outcome("1", "applied", "ok", None, {"queue": "IT"}), Outcome("2", "applied")]) == 1
    assert b.get("rt", "1").applied == {"queue": "IT"} and b.get("rt", "2").status == "claimed"
    assert b.release_many("rt", ["3", "2", "1"]) == 1  # only b's unfinished claim of 3
    assert b.counts()["rt"] == {"applied": 1, "claimed": 1, "dry_run": 1, "failed": 1}


def test_statuses_are_stored_as_their_plain_strings(store: Store) -> None:
    """The status enum keeps the column's strings: rows read back as DecisionStatus, stored as "applied" etc."""
    d = DecisionStore(store, "a")
    assert d.claim(new("1")) and d.record(new("2"), DecisionStatus.DRY_RUN, reason="dry-run")
    assert d.finish("rt", "1", DecisionStatus.APPLIED, applied={"queue": "IT"})
    with store.session() as session:
        raw = dict(session.execute(text("SELECT ticket_id, status FROM decisions")).all())
    assert raw == {"1": "applied", "2": "dry_run"} and all(type(v) is str for v in raw.values())
    assert d.get("rt", "1").status is DecisionStatus.APPLIED and d.get("rt", "2").status == "dry_run"
    assert set(d.counts()["rt"]) == {"applied", "dry_run"}
