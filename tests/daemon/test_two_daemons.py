"""Two daemons on one database route each of 500 sandbox tickets exactly once; each holds its own identity."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from connector.config import parse_config
from connector.daemon import Daemon, run_daemon
from connector.model.classifier import ClassifierHolder
from connector.sandbox import running_sandbox
from connector.sandbox.db import SeedTicket
from connector.store.db import Store, utcnow
from connector.store.decisions import DecisionStore, NewDecision
from connector.store.leases import LeaseHeld, LeaseInfo
from connector.store.tables import Decision, InstanceLease
from tests.support.fakes import KeywordClassifier, MemoryAdapter, make_tickets

TOKEN = "two-daemons-token"
N = 500


def config_for(url: str, base_url: str, instance: str, tmp_path: Path):
    return parse_config(
        {
            "state_dir": str(tmp_path),
            "store": {"url": url},
            "daemon": {"instance_id": instance},
            "systems": {
                "sandbox": {
                    "type": "generic_rest",
                    "connection": {"base_url": base_url, "auth": {"type": "bearer", "token": TOKEN},
                                   "paging": {"style": "after"}},
                    "source": {"queues": ["Inbox"], "states": ["new"]},
                    "page_size": 50,
                    "max_tickets_per_poll": 1000,
                    "max_concurrent_writes": 8,
                    "routing": {"queue": {"map": {"*": "Hardware"}, "threshold": 0.1}},
                }
            },
        }
    )


@pytest.mark.slow
def test_two_daemons_route_each_ticket_exactly_once(db_url: str, tmp_path: Path) -> None:
    Store(db_url).dispose()  # schema in place before both start (they would serialise on it anyway)
    with running_sandbox(None, token=TOKEN) as sandbox:
        sandbox.db.create_tickets([SeedTicket(f"ticket {i}", "printer broken") for i in range(N)])
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def daemon(instance: str) -> None:
            try:
                config = config_for(db_url, sandbox.api, instance, tmp_path / instance)
                # several polls each, overlapping with the other daemon's
                runs = [asyncio.run(Daemon(config, holder=ClassifierHolder(KeywordClassifier())).run_once())
                        for _ in range(2)]
                results[instance] = runs
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=daemon, args=(name,)) for name in ("daemon-a", "daemon-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors
        for runs in results.values():
            for run in runs:
                assert run["sandbox"].ok, run["sandbox"].error

        store = Store(db_url)
        try:
            counts = DecisionStore(store, "reader").counts()["sandbox"]
            by_instance: dict[str, int] = {}
            for record in DecisionStore(store, "reader").recent("sandbox", limit=N + 10):
                by_instance[record.claimed_by] = by_instance.get(record.claimed_by, 0) + 1
        finally:
            store.dispose()
        assert counts == {"applied": N}
        assert sum(by_instance.values()) == N
        notes = [len(sandbox.db.list_notes(i)) for i in range(1, N + 1)]
        assert notes == [1] * N, "every ticket got exactly one note"
        assert sandbox.db.count_tickets() == N
        rows, total, _ = sandbox.db.list_tickets(queues=["Hardware"], states=[], priorities=[], updated_since=None,
                                                 resolved_since=None, after_id=None, offset=0, limit=1000)
        assert total == N


# --------------------------------------------------------------------------- identities and leases


def test_a_daemon_started_on_the_same_host_leaves_the_writes_in_flight_alone(db_url: str, tmp_path: Path) -> None:
    """The reported case: a second daemon with default settings on the same host, started while the first one's
    writes are in flight, must not "reconcile" (and write again) those tickets."""
    Store(db_url).dispose()
    with running_sandbox(None, token=TOKEN) as sandbox:
        ids = [sandbox.db.create_ticket(f"ticket {i}", "printer broken").id for i in range(4)]
        sandbox.faults.add(path=r"^/api/tickets/\d+$", method="PATCH", status=0, delay=1.0, times=-1)  # slow writes

        async def scenario() -> dict[str, Any]:
            first = Daemon(config_for(db_url, sandbox.api, None, tmp_path / "a"),
                           holder=ClassifierHolder(KeywordClassifier()))
            second = Daemon(config_for(db_url, sandbox.api, None, tmp_path / "b"),
                            holder=ClassifierHolder(KeywordClassifier()))
            running = asyncio.create_task(first.run_once())
            while sandbox.faults.hits == 0:  # the first daemon is writing
                await asyncio.sleep(0.02)
            late = await second.run_once()
            return {"first": await running, "second": late}

        results = asyncio.run(scenario())
        assert results["first"]["sandbox"].ok and results["second"]["sandbox"].ok
        assert results["second"]["sandbox"].reconciled == 0
        assert [len(sandbox.db.list_notes(i)) for i in ids] == [1, 1, 1, 1]
        assert all(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids)


def mem_config(url: str, tmp_path: Path, instance: str | None = None, **daemon: Any):
    return parse_config(
        {
            "state_dir": str(tmp_path),
            "store": {"url": url},
            "daemon": {"instance_id": instance, **daemon},
            "systems": {
                "mem": {
                    "type": "generic_rest",
                    "connection": {"base_url": "http://127.0.0.1:9/api"},
                    "source": {"queues": ["Inbox"]},
                    "routing": {"queue": {"map": {"*": "IT"}, "threshold": 0.0}},
                }
            },
        }
    )


def mem_daemon(config, adapter: MemoryAdapter, store: Store) -> Daemon:
    return Daemon(config, store=store, holder=ClassifierHolder(KeywordClassifier()), adapters={"mem": adapter})


def lease_row(store: Store, instance_id: str) -> LeaseInfo | None:
    with store.session() as s:
        row = s.get(InstanceLease, instance_id)
        return LeaseInfo.from_row(row) if row is not None else None


def test_default_ids_differ_and_neither_daemon_reconciles_the_others_claim(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url)
    adapter = MemoryAdapter(make_tickets(1))

    async def scenario() -> tuple[str, str, int]:
        a = mem_daemon(mem_config(db_url, tmp_path), adapter, store)
        b = mem_daemon(mem_config(db_url, tmp_path), adapter, store)
        await a.setup()
        await b.setup()  # same host, default settings: both start
        try:
            # a has claimed ticket 1 and is writing it (an old claim: a slow helpdesk)
            assert a.decisions.claim(NewDecision("mem", "1", "apply", planned={"queue": "IT", "note": "routed by a"}))
            a.decisions.mark_writing("mem", "1")
            with store.session() as s:
                s.execute(update(Decision).values(claimed_at=utcnow() - timedelta(hours=2)))
            reconciled = await b.pipelines["mem"].reconcile()
            return a.instance_id, b.instance_id, reconciled
        finally:
            await b.close()
            await a.close()

    try:
        a_id, b_id, reconciled = asyncio.run(scenario())
        assert a_id != b_id
        assert reconciled == 0
        record = DecisionStore(store, "reader").get("mem", "1")
        assert record.status == "claimed" and record.claimed_by == a_id
        assert adapter.updates["1"] == 0 and not adapter.notes.get("1")  # b wrote nothing on a's ticket
        # a has stopped (its lease released): now its claim is b's to reconcile
        b2 = mem_daemon(mem_config(db_url, tmp_path), adapter, store)
        assert asyncio.run(b2.run_once())["mem"].reconciled == 1
    finally:
        store.dispose()


def test_a_second_daemon_under_a_live_explicit_id_is_refused(db_url: str, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    store = Store(db_url)
    config = mem_config(db_url, tmp_path, "router-1")

    async def scenario() -> None:
        first = mem_daemon(config, MemoryAdapter(), store)
        await first.setup()
        try:
            with pytest.raises(LeaseHeld, match="'router-1' is in use by a running daemon"):
                await mem_daemon(config, MemoryAdapter(), store).setup()
            # the process entry point: exit status 1 and one clear line
            caplog.set_level(logging.ERROR, logger="connector.daemon")
            assert await asyncio.to_thread(run_daemon, config, once=True) == 1
            assert any("instance id 'router-1' is in use" in r.getMessage() and "pid" in r.getMessage()
                       for r in caplog.records)
            assert lease_row(store, "router-1").is_live()  # the refused ones did not end the first's lease
        finally:
            await first.close()

    try:
        asyncio.run(scenario())
        assert not lease_row(store, "router-1").is_live()  # released by close()
    finally:
        store.dispose()


def test_a_running_daemon_renews_its_lease_and_releases_it_on_a_clean_stop(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url)
    # a ttl of several heartbeats, so a loaded machine that delays one heartbeat does not expire the lease
    config = mem_config(db_url, tmp_path, "router-1", lease_ttl=2.0, heartbeat_interval=0.2)
    daemon = mem_daemon(config, MemoryAdapter(make_tickets(2)), store)
    seen: list[tuple[LeaseInfo, bool]] = []

    def observe() -> None:
        info = lease_row(store, "router-1")
        assert info is not None
        seen.append((info, info.is_live()))

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        for _ in range(10):  # 3 s: well past the ttl, so only heartbeats keep it live
            await asyncio.sleep(0.3)
            await asyncio.to_thread(observe)
        daemon.request_stop()  # what SIGTERM does
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(scenario())
        assert all(live for _, live in seen)
        assert seen[-1][0].heartbeat_at > seen[0][0].heartbeat_at
        released = lease_row(store, "router-1")
        assert released is not None and not released.is_live()
        assert released.expires_at <= utcnow()
    finally:
        store.dispose()
