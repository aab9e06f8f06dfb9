"""Export of resolved tickets into training examples: paged, resumable, idempotent, anonymised."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.base import TransientError
from connector.config import FieldRouting
from connector.learning.corrections import automatic_share, override_rates
from connector.learning.export import Exporter, is_eval_ticket
from connector.learning.labels import label_for_value
from connector.learning.retention import apply_retention
from connector.store.db import as_utc, utcnow
from connector.store.tables import Correction, PollState, TrainingExample
from tests.support.fakes import MemoryAdapter
from tests.support.learning import T0, add_decision, learning_config, make_store, make_tickets
from tests.support.paths import REPO



def _examples(store) -> dict[str, TrainingExample]:
    with store.session() as s:
        return {row.ticket_id: row for row in s.scalars(select(TrainingExample))}


def _run(exporter: Exporter, **kwargs):
    return asyncio.run(exporter.export_system("fake", **kwargs))


def test_export_stores_one_cleaned_anonymised_example_per_ticket(tmp_path: Path) -> None:
    config = learning_config(tmp_path, eval_fraction=0.25)
    store = make_store(tmp_path)
    tickets = make_tickets(35)
    tickets[0] = replace(tickets[0], body="<p>printer <b>broken</b></p><blockquote>old reply</blockquote>", body_is_html=True)
    adapter = MemoryAdapter(tickets)
    stats = _run(Exporter(config, store, adapter_factory=lambda c, s: adapter))

    assert (stats.pages, stats.tickets, stats.new, stats.updated) == (4, 35, 35, 0)
    rows = _examples(store)
    assert len(rows) == 35
    assert rows["1"].text == "password problem 1. printer broken"
    assert rows["2"].labels == {"queue": "HR", "priority": "normal"}
    assert all("1234" not in r.text and "[PHONE]" in r.text for k, r in rows.items() if k != "1")
    # the evaluation set is a stable function of system + ticket id
    assert {k for k, r in rows.items() if r.is_eval} == {str(i) for i in range(1, 36) if is_eval_ticket("fake", str(i), 0.25)}
    assert 0 < sum(r.is_eval for r in rows.values()) < 35
    with store.session() as s:
        state = s.get(PollState, "fake")
        assert state.export_cursor is None
        assert state.last_export_at is not None
        assert as_utc(state.export_since) <= utcnow()


def test_anonymisation_can_be_switched_off(tmp_path: Path) -> None:
    config = learning_config(tmp_path, privacy={"anonymize": False})
    store = make_store(tmp_path)
    _run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(make_tickets(3))))
    assert "+49 30 12340001" in _examples(store)["1"].text


def test_next_export_asks_since_the_last_one_and_replaces_changed_tickets(tmp_path: Path) -> None:
    config = learning_config(tmp_path, export_overlap_minutes=0)
    store = make_store(tmp_path)
    tickets = make_tickets(12, t0=utcnow() - timedelta(days=1))
    adapter = MemoryAdapter(tickets)
    exporter = Exporter(config, store, adapter_factory=lambda c, s: adapter)
    _run(exporter)
    first_since = adapter.resolved_listings[-1][0]
    assert first_since is None

    # ticket 3 is re-opened, moved and resolved again; ticket 13 is new
    adapter.tickets["3"] = replace(tickets[2], queue="Access", updated_at=utcnow() + timedelta(seconds=5))
    adapter.tickets["13"] = replace(make_tickets(1, start=13)[0], updated_at=utcnow() + timedelta(seconds=5))
    stats = _run(exporter)
    assert adapter.resolved_listings[-1][0] is not None
    assert (stats.tickets, stats.new, stats.updated) == (2, 1, 1)
    rows = _examples(store)
    assert len(rows) == 13
    assert rows["3"].labels["queue"] == "Access"


def test_interrupted_export_resumes_from_the_saved_page_without_duplicates(tmp_path: Path) -> None:
    config = learning_config(tmp_path)
    store = make_store(tmp_path)
    tickets = make_tickets(50)
    failing = MemoryAdapter(tickets)

    def helpdesk_goes_away_after_two_pages(operation: str, _ticket_id: str | None) -> None:
        if operation == "list_resolved" and failing.calls["list_resolved"] > 2:
            raise TransientError("helpdesk went away")

    failing.hook = helpdesk_goes_away_after_two_pages
    with pytest.raises(TransientError):
        _run(Exporter(config, store, adapter_factory=lambda c, s: failing))
    assert len(_examples(store)) == 20
    with store.session() as s:
        saved = json.loads(s.get(PollState, "fake").export_cursor)
    assert saved["cursor"] == "20"

    healthy = MemoryAdapter(tickets)
    stats = _run(Exporter(config, store, adapter_factory=lambda c, s: healthy))
    assert stats.resumed
    assert healthy.resolved_listings == [(None, "20")]
    assert stats.tickets == 30
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(TrainingExample)) == 50
        assert s.get(PollState, "fake").export_cursor is None


def test_killed_export_process_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGKILL in the middle of an export (a real process), then a second run completes it."""
    script = tmp_path / "slow_export.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from pathlib import Path
            from connector.learning.export import Exporter
            from tests.support.fakes import MemoryAdapter
            from tests.support.learning import learning_config, make_store, make_tickets
            tmp = Path({str(tmp_path)!r})
            adapter = MemoryAdapter(make_tickets(60), latency=0.4)
            asyncio.run(Exporter(learning_config(tmp), make_store(tmp), adapter_factory=lambda c, s: adapter).export_system("fake"))
            """
        )
    )
    store = make_store(tmp_path)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if 20 <= len(_examples(store)) < 60:
                break
            assert proc.poll() is None, "the export ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    stored_before = len(_examples(store))
    assert 20 <= stored_before < 60

    adapter = MemoryAdapter(make_tickets(60))
    stats = asyncio.run(Exporter(learning_config(tmp_path), store, adapter_factory=lambda c, s: adapter).export_system("fake"))
    assert stats.resumed and adapter.resolved_listings[0][1] is not None
    rows = _examples(store)
    assert sorted(rows, key=int) == [str(i) for i in range(1, 61)]


def test_listing_without_body_reads_each_ticket(tmp_path: Path) -> None:
    config = learning_config(tmp_path)
    store = make_store(tmp_path)
    adapter = MemoryAdapter(make_tickets(5), list_bodies=False)
    _run(Exporter(config, store, adapter_factory=lambda c, s: adapter))
    assert "please help" in _examples(store)["2"].text


def test_corrections_are_recorded_with_both_values_and_counted(tmp_path: Path) -> None:
    config = learning_config(tmp_path)
    store = make_store(tmp_path)
    tickets = make_tickets(6)  # queues cycle Access, HR, Hardware, ...
    # the daemon routed tickets 1..5; people changed the queue of 1 and the priority of 2; 6 was skipped
    add_decision(store, "1", {"queue": "Hardware", "priority": "normal", "note": True})  # final queue Access
    add_decision(store, "2", {"queue": "HR", "priority": "high"})  # final priority normal
    add_decision(store, "3", {"queue": "Hardware"})
    add_decision(store, "4", {"queue": "Access"})
    add_decision(store, "5", {"queue": "HR"})
    add_decision(store, "6", {"queue": "HR"}, status="skipped")
    seen = []
    stats = _run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(tickets), on_correction=seen.append))

    assert stats.corrections == 2
    assert {(c.ticket_id, c.field, c.predicted, c.final) for c in seen} == {
        ("1", "queue", "Hardware", "Access"),
        ("2", "priority", "high", "normal"),
    }
    rows = _examples(store)
    assert rows["1"].source == "correction" and rows["1"].labels["queue"] == "Access"
    assert rows["3"].source == "export"
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Correction)) == 2
        rates = {(r.field, r.value): (r.applied, r.corrected) for r in override_rates(s)}
        share = automatic_share(s)
    assert rates[("queue", "Hardware")] == (2, 1)
    assert rates[("queue", "HR")] == (2, 0)
    assert rates[("priority", "high")] == (1, 1)
    assert share["fake"] == {"decided": 6, "automatic": 5, "share": round(5 / 6, 4)}

    # a second export of the same tickets finds nothing new; fixing ticket 1 back removes its correction
    tickets[0] = replace(tickets[0], queue="Hardware")
    seen.clear()
    stats = _run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(tickets), on_correction=seen.append), since=T0 - timedelta(days=1))
    assert (stats.tickets, stats.new, stats.corrections, seen) == (6, 0, 0, [])
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Correction)) == 1


def test_retention_deletes_old_examples_and_corrections(tmp_path: Path) -> None:
    config = learning_config(tmp_path)
    store = make_store(tmp_path)
    now = utcnow()
    tickets = make_tickets(4, t0=now - timedelta(days=100)) + make_tickets(3, start=5, t0=now - timedelta(days=1))
    add_decision(store, "1", {"queue": "Hardware"})
    _run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(tickets)))
    assert apply_retention(store, 0).examples == 0
    result = apply_retention(store, 30, now=now + timedelta(days=2))
    assert result.examples == 4
    assert sorted(_examples(store), key=int) == ["5", "6", "7"]
    assert apply_retention(store, 30, now=now + timedelta(days=40)).corrections == 1


def test_system_values_map_back_to_model_labels() -> None:
    routing = FieldRouting(
        map={"Hardware": "IT::Hardware", "Access": "IT::Access", "HR/*": "People", "*": "Support/{label}"},
        low_confidence="fallback",
        fallback="Triage",
    )
    assert label_for_value(routing, "IT::Hardware") == "Hardware"
    assert label_for_value(routing, "Support/Storage") == "Storage"
    assert label_for_value(routing, "Triage") is None
    assert label_for_value(routing, "") is None
    assert label_for_value(None, "normal") == "normal"


def test_two_processes_exporting_at_once_store_each_ticket_once(db_url: str, tmp_path: Path) -> None:
    import threading

    from connector.store.db import Store

    Store(db_url).dispose()
    tickets = make_tickets(120)
    errors: list[BaseException] = []
    stats = []

    def run() -> None:
        store = Store(db_url)
        try:
            exporter = Exporter(learning_config(tmp_path), store, adapter_factory=lambda c, s: MemoryAdapter(tickets))
            stats.append(asyncio.run(exporter.export_system("fake", since=T0 - timedelta(days=1))))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(s.new for s in stats) == 120  # each ticket inserted by exactly one of them
    store = Store(db_url)
    try:
        rows = _examples(store)
        assert sorted(rows, key=int) == [str(i) for i in range(1, 121)]
    finally:
        store.dispose()
