"""Two daemons on one database route each of 500 sandbox tickets exactly once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from routing_support import KeywordClassifier, temporary_database

from connector.config import parse_config
from connector.daemon import Daemon
from connector.model.classifier import ClassifierHolder
from connector.sandbox import running_sandbox
from connector.sandbox.db import SeedTicket
from connector.store.db import Store
from connector.store.decisions import DecisionStore

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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    with temporary_database(request.param, tmp_path, "two_daemons") as url:
        yield url


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
