"""End to end against a real Request Tracker 5: the daemon routes tickets inside RT.

1. apply / threshold fallback / leave / suggest / dry-run;
2. a ticket moved by a person between the daemon's fetch and its write is left alone;
3. killing the daemon mid-batch and starting it again routes every ticket exactly once;
4. RT stopped for a while: the daemon reports, backs off, and routes the backlog when RT is back;
5. ``check-config --online`` catches an unmapped queue and bad credentials;
6. the export of resolved tickets returns their final queue and priority.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Ticket
from adapters.http import RetryPolicy
from adapters.request_tracker import RequestTrackerAdapter, RequestTrackerSettings
from connector.config import AppConfig, parse_config
from connector.daemon import Daemon
from connector.model.classifier import ClassifierHolder
from connector.store.db import Store
from connector.store.decisions import DecisionStore
from tests.support.rt_server import RtServer
from tests.support.rt_support import (
    DaemonProcess,
    MarkerClassifier,
    cli,
    decisions,
    system_section,
    wait_for,
    write_config,
    writing_now,
)
from tests.support.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration

NOTE_SUBJECT = "Automatic routing"


def app_config(tmp_path: Path, systems: dict[str, Any], **extra: Any) -> AppConfig:
    data = {
        "state_dir": str(tmp_path),
        "store": {"url": f"sqlite:///{tmp_path / 'connector.db'}"},
        "daemon": {"instance_id": "rt-e2e", "shutdown_timeout": 10},
        "systems": systems,
        **extra,
    }
    return parse_config(data, "<test>")


def run_once(config: AppConfig, store: Store, adapters: dict[str, Any] | None = None) -> dict[str, Any]:
    daemon = Daemon(config, store=store, holder=ClassifierHolder(MarkerClassifier()), adapters=adapters)
    return asyncio.run(daemon.run_once())


def connector_notes(rt: RtServer, tid: str) -> list[str]:
    return rt.comments(tid)


def queue_changes(rt: RtServer, tid: str) -> list[dict[str, str]]:
    return [t for t in rt.history(tid) if t["type"] == "Set" and t["field"] == "Queue"]


# --------------------------------------------------------------------------- 1. modes and thresholds


def test_apply_fallback_leave_suggest_and_dry_run(rt: RtServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    queues = {}
    for kind in ("apply", "leave", "suggest", "dry"):
        name = f"e2e-{kind}-{int(time.time() * 1000) % 100000}"
        with rt.client() as c:
            c.post("/queue", json={"Name": name}).raise_for_status()
        queues[kind] = name

    t = {
        "net": rt.create_ticket(queues["apply"], "VPN down", "The VPN tunnel drops q:network p:high"),
        "hw": rt.create_ticket(queues["apply"], "Laptop", "Screen flickers q:hardware p:low"),
        "unsure": rt.create_ticket(queues["apply"], "Hmm", "something odd q:network p:high c:0.40"),
        "html": rt.create_ticket(queues["apply"], "HTML mail", "<div><p>Outlook crashes q:software p:normal</p></div>",
                                 content_type="text/html"),
        "leave": rt.create_ticket(queues["leave"], "Unclear", "no idea q:hardware p:high c:0.30"),
        "suggest": rt.create_ticket(queues["suggest"], "Printer", "paper jam q:hardware p:high"),
        "dry": rt.create_ticket(queues["dry"], "Wifi", "wifi gone q:network p:low"),
    }
    config = app_config(tmp_path, {
        "rt": system_section(rt, queues["apply"]),
        "rt_leave": system_section(rt, queues["leave"], queue_low="leave"),
        "rt_suggest": system_section(rt, queues["suggest"], mode="suggest"),
        "rt_dry": system_section(rt, queues["dry"], mode="dry-run"),
    })
    store = Store(config.store_url)
    try:
        results = run_once(config, store)
        assert all(r.error is None for r in results.values()), {n: r.error for n, r in results.items()}

        state = {k: rt.ticket(v) for k, v in t.items()}
        # confident: queue and priority set, one internal note
        assert (state["net"]["queue"], state["net"]["priority"]) == ("Network", "90")
        assert (state["hw"]["queue"], state["hw"]["priority"]) == ("Hardware", "10")
        assert (state["html"]["queue"], state["html"]["priority"]) == ("Software", "50")
        # below the threshold: queue to the fallback, priority left as it was
        assert (state["unsure"]["queue"], state["unsure"]["priority"]) == ("Fallback", "0")
        # below the threshold with low_confidence: leave -> untouched, no note
        assert (state["leave"]["queue"], state["leave"]["priority"]) == (queues["leave"], "0")
        assert connector_notes(rt, t["leave"]) == []
        # suggest: the note only
        assert (state["suggest"]["queue"], state["suggest"]["priority"]) == (queues["suggest"], "0")
        notes = connector_notes(rt, t["suggest"])
        assert len(notes) == 1 and "Hardware" in notes[0]
        # dry-run: nothing written at all
        assert (state["dry"]["queue"], state["dry"]["priority"]) == (queues["dry"], "0")
        assert connector_notes(rt, t["dry"]) == [] and queue_changes(rt, t["dry"]) == []
        for key in ("net", "hw", "unsure", "html"):
            assert len(connector_notes(rt, t[key])) == 1, key

        ds = DecisionStore(store, "check")
        status = {k: ds.get(s, t[k]).status for k, s in (  # type: ignore[union-attr]
            ("net", "rt"), ("unsure", "rt"), ("leave", "rt_leave"), ("suggest", "rt_suggest"), ("dry", "rt_dry"))}
        assert status == {"net": "applied", "unsure": "applied", "leave": "skipped", "suggest": "suggested",
                          "dry": "dry_run"}

        # a second run never writes twice
        run_once(config, store)
        assert len(connector_notes(rt, t["suggest"])) == 1
        assert len(queue_changes(rt, t["net"])) == 1 and len(connector_notes(rt, t["net"])) == 1
    finally:
        store.dispose()


# --------------------------------------------------------------------------- 2. a person was faster


class _PersonMovesIt(RequestTrackerAdapter):
    """After the daemon's first read of ``victim``, a person moves it (through RT, as root)."""

    victim: str = ""
    server: RtServer | None = None
    moved = False

    async def get_ticket(self, ticket_id: str) -> Ticket:
        ticket = await super().get_ticket(ticket_id)
        if ticket_id == self.victim and not self.moved:
            self.moved = True
            assert self.server is not None
            await asyncio.to_thread(self.server.update, ticket_id, Queue="Software", Priority=33)
        return ticket


def test_ticket_moved_by_a_person_between_fetch_and_write_is_left_alone(
    rt: RtServer, source_queue: str, tmp_path: Path
) -> None:
    victim = rt.create_ticket(source_queue, "Router", "router reboots q:network p:high")
    other = rt.create_ticket(source_queue, "Keyboard", "keys stuck q:hardware p:normal")
    config = app_config(tmp_path, {"rt": system_section(rt, source_queue)})
    adapter = _PersonMovesIt("rt", config.adapter_settings("rt"), source_queues=[source_queue], source_states=["new"])
    adapter.victim, adapter.server = victim, rt
    store = Store(config.store_url)
    try:
        results = run_once(config, store, adapters={"rt": adapter})
        assert results["rt"].error is None
        assert adapter.moved
        # the person's choice stands; no note from the daemon
        assert rt.ticket(victim)["queue"] == "Software" and rt.ticket(victim)["priority"] == "33"
        assert connector_notes(rt, victim) == []
        record = DecisionStore(store, "check").get("rt", victim)
        assert record is not None and record.status == "changed"
        assert "changed by someone else" in (record.reason or "") and "Software" in (record.reason or "")
        # the other ticket of the batch was routed
        assert rt.ticket(other)["queue"] == "Hardware"
    finally:
        store.dispose()


# --------------------------------------------------------------------------- daemon processes (real CLI, real model)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("rt-models")
    q = build_tiny_model(root / "queue", ["Network", "Hardware", "Software"], version="rtq-1", field="queue")
    p = build_tiny_model(root / "priority", ["10", "50", "90"], version="rtp-1", field="priority", seed=1)
    return {"queue": str(q), "priority": str(p)}


def daemon_config(tmp_path: Path, rt: RtServer, source_queue: str, models: dict[str, str], **system: Any) -> Path:
    token_file = tmp_path / "rt-token"
    token_file.write_text(rt.tokens["connector"] + "\n", encoding="utf-8")
    section: dict[str, Any] = {
        "type": "request_tracker",
        "connection": {"base_url": rt.base_url, "token_file": str(token_file)},
        "source": {"queues": [source_queue], "states": ["new"]},
        "poll_interval": 2,
        "page_size": 4,
        "max_concurrent_writes": 1,
        "mode": "apply",
        # the tiny model's labels are RT's own queue names and priorities
        "routing": {"queue": {"map": {"*": "{label}"}, "threshold": 0.0},
                    "priority": {"map": {"*": "{label}"}, "threshold": 0.0}},
        "note": {"subject": NOTE_SUBJECT},
    }
    section.update(system)
    data = {
        "state_dir": str(tmp_path),
        "store": {"url": f"sqlite:///{tmp_path / 'connector.db'}"},
        "logging": {"level": "INFO"},
        "daemon": {"instance_id": "rt-daemon", "shutdown_timeout": 10},
        "model": {"paths": models, "device": "cpu"},
        "systems": {"rt": section},
    }
    return write_config(tmp_path / "config.yaml", data)


def test_killed_mid_batch_then_restarted_routes_every_ticket_exactly_once(
    rt: RtServer, source_queue: str, tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    ids = [rt.create_ticket(source_queue, f"issue {i}", f"my printer is broken {i} please help") for i in range(10)]
    config = daemon_config(tmp_path, rt, source_queue, tiny_models)
    db = tmp_path / "connector.db"
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        # kill in the middle of a batch: some tickets routed, others of the page claimed, one maybe half-written
        wait_for(lambda: writing_now(db), 240, "a write in flight", interval=0.2, on_timeout=daemon.output)
    finally:
        daemon.kill()  # SIGKILL: no clean shutdown, the claims stay in the store
    done_before = decisions(db)
    assert len([d for d in done_before.values() if d["status"] == "applied"]) < len(ids), "killed too late"
    assert any(d["status"] == "claimed" for d in done_before.values()), "killed between two writes"

    restarted = DaemonProcess(config, tmp_path / "daemon2.log")
    restarted.start()
    try:
        wait_for(lambda: len([d for d in decisions(db).values() if d["status"] == "applied"]) == len(ids), 300,
                 "every ticket routed after the restart", interval=1.0, on_timeout=restarted.output)
    finally:
        assert restarted.terminate() == 0, restarted.output()
    assert "reconciling" in restarted.output()  # the claims left by the kill were settled first

    for tid in ids:
        changes = queue_changes(rt, tid)
        assert len(changes) == 1, (tid, changes)  # routed exactly once
        assert changes[0]["creator"] == "connector"
        assert rt.ticket(tid)["queue"] in {"Network", "Hardware", "Software"}
        # exactly one note: one interrupted between the field write and the note is written by reconciliation,
        # one interrupted after it was sent is found by its marker and not written again
        notes = connector_notes(rt, tid)
        assert len(notes) == 1, (tid, notes)
        assert "[helpdesk-connector decision " in notes[0]


# --------------------------------------------------------------------------- 4. RT down for a while


def test_rt_down_for_a_while_daemon_reports_backs_off_and_routes_the_backlog(
    rt: RtServer, source_queue: str, tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    ids = [rt.create_ticket(source_queue, f"backlog {i}", f"vpn broken {i}") for i in range(3)]
    config = daemon_config(tmp_path, rt, source_queue, tiny_models, page_size=10, max_concurrent_writes=2)
    db = tmp_path / "connector.db"
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    rt.stop()
    try:
        daemon.start()
        wait_for(lambda: "poll failed" in daemon.output(), 180, "the daemon to report the outage",
                 on_timeout=daemon.output)
        status = json.loads(cli("status", "--json", "--config", str(config)).stdout)
        row = next(r for r in status if r["system"] == "rt")
        assert row["consecutive_failures"] >= 1 and row["last_error"] and "TransientError" in row["last_error"]
        time.sleep(8)  # a few retries while RT stays down
        assert daemon.alive
        assert decisions(db) == {}
    finally:
        rt.start()
    try:
        wait_for(lambda: len([d for d in decisions(db).values() if d["status"] == "applied"]) == len(ids), 240,
                 "the backlog to be routed once RT is back", interval=1.0, on_timeout=daemon.output)
        wait_for(lambda: "recovered after" in daemon.output(), 30, "the recovery message", on_timeout=daemon.output)
    finally:
        code = daemon.terminate()
    log = daemon.output()
    assert code == 0, log
    assert log.count("poll failed") == 1  # reported once on the transition, not on every retry
    assert "retrying with backoff, next try in" in log
    for tid in ids:
        assert len(queue_changes(rt, tid)) == 1 and len(connector_notes(rt, tid)) == 1


# --------------------------------------------------------------------------- 5. check-config --online


def test_check_config_online_catches_unknown_queue_and_bad_credentials(
    rt: RtServer, source_queue: str, tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    good = daemon_config(tmp_path, rt, source_queue, tiny_models,
                         routing={"queue": {"map": {"net": "Network", "hw": "Hardware"}, "threshold": 0.7,
                                            "low_confidence": "fallback", "fallback": "Fallback"},
                                  "priority": {"map": {"low": "10", "high": "90"}}})
    ok = cli("check-config", "--online", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "online checks passed" in ok.stdout

    unknown = daemon_config(tmp_path, rt, source_queue, tiny_models,
                            routing={"queue": {"map": {"net": "Network", "db": "Databases"}},
                                     "priority": {"map": {"low": "10", "high": "High"}}})
    res = cli("check-config", "--online", str(unknown))
    assert res.returncode == 2
    assert "systems.rt.routing.queue.map: queue 'Databases' does not exist" in res.stderr
    assert "systems.rt.routing.priority.map: priority 'High' does not exist" in res.stderr
    assert "Network" not in res.stderr.split("'Databases'")[0]  # known queues are not reported

    bad_token = daemon_config(tmp_path, rt, source_queue, tiny_models)
    (tmp_path / "rt-token").write_text("1-99-0123456789abcdef\n", encoding="utf-8")
    res = cli("check-config", "--online", str(bad_token))
    assert res.returncode == 2
    assert "systems.rt.connection" in res.stderr and "AuthenticationError" in res.stderr
    assert "0123456789abcdef" not in res.stderr + res.stdout  # the secret is never printed


# --------------------------------------------------------------------------- 6. export of resolved tickets


def test_export_of_resolved_tickets_returns_final_queue_and_priority(
    rt: RtServer, source_queue: str, tmp_path: Path
) -> None:
    from connector.learning.export import Exporter
    from connector.store.tables import TrainingExample

    routed = rt.create_ticket(source_queue, "Mail", "Outlook cannot send q:software p:normal")
    corrected = rt.create_ticket(source_queue, "Cable", "network cable cut q:network p:low")
    config = app_config(tmp_path, {"rt": system_section(rt, source_queue)})
    store = Store(config.store_url)
    try:
        run_once(config, store)
        assert rt.ticket(corrected)["queue"] == "Network"
        # an agent corrects one ticket, then both are resolved
        rt.update(corrected, Queue="Hardware", Priority=90)
        rt.update(routed, Status="resolved")
        rt.update(corrected, Status="resolved")

        stats = asyncio.run(Exporter(config, store).export_system("rt", since=datetime.now(UTC) - timedelta(minutes=10)))
        assert stats is not None
        with store.session() as s:
            rows = {r.ticket_id: r for r in s.query(TrainingExample).filter_by(system="rt")}
        assert {routed, corrected} <= set(rows)
        assert rows[routed].labels == {"queue": "software", "priority": "normal"}
        assert rows[corrected].labels == {"queue": "hardware", "priority": "high"}  # the final values, mapped back
        assert "network cable cut" in rows[corrected].text
    finally:
        store.dispose()


def test_adapter_settings_accept_token_file(rt: RtServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(rt.tokens["connector"] + "\n", encoding="utf-8")
    settings = RequestTrackerSettings.model_validate({"base_url": rt.base_url + "/", "token_file": str(token_file)})
    adapter = RequestTrackerAdapter("rt", settings, source_queues=[], source_states=["new"],
                                    retry=RetryPolicy(attempts=1))
    asyncio.run(adapter.check_connection())
    asyncio.run(adapter.aclose())
