"""The daemon end to end: sandbox helpdesk + generic REST adapter + store + scheduler.

Covers ``run --once`` with a real tiny model, a helpdesk that is unreachable at
start (the daemon keeps running, retries, reports, recovers), every kind of
bad answer (malformed JSON, HTML error page, 500, 401, 429 with Retry-After,
a timeout), a mapping to a queue the helpdesk does not have, and shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from connector.daemon import Daemon
from connector.sandbox import running_sandbox
from connector.store.db import Store, as_utc, utcnow
from connector.store.decisions import DecisionStore
from connector.store.tables import InstanceLease
from tests.support.config import make_config
from tests.support.daemon import SANDBOX_TOKEN, decisions, keyword_daemon, sandbox_config, seed
from tests.support.net import free_port

# --------------------------------------------------------------------------- happy path


def test_run_once_routes_sandbox_tickets_with_a_tiny_model(tmp_path: Path, model_dirs) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 30)
        routing = {"queue": {"map": {"*": "{label}"}, "threshold": 0.0}, "priority": {"map": {"*": "{label}"}, "threshold": 0.0}}
        config = sandbox_config(tmp_path, sandbox.api, models=model_dirs, routing=routing)
        results = asyncio.run(Daemon(config).run_once())
        assert results["sandbox"].ok, results["sandbox"].error
        assert results["sandbox"].outcomes == {"applied": 30}
        for ticket_id in ids:
            row = sandbox.db.get_ticket(ticket_id)
            assert row.queue in ("Hardware", "Software", "Access")
            notes = sandbox.db.list_notes(ticket_id)
            assert len(notes) == 1 and "model queue=q1,priority=p1" in notes[0].body
        # a second run finds nothing new
        results = asyncio.run(Daemon(config).run_once())
        assert results["sandbox"].new == 0
        assert decisions(config).counts()["sandbox"] == {"applied": 30}


# --------------------------------------------------------------------------- unreachable at start


def test_helpdesk_unreachable_at_start_daemon_keeps_retrying_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    config = sandbox_config(tmp_path, f"http://127.0.0.1:{port}/api")
    daemon = keyword_daemon(config)
    for name in list(daemon.health):
        daemon.health[name].max_backoff = 0.5

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        # nothing listens: polls fail, the daemon stays up and reports
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            health = await asyncio.to_thread(lambda: decisions(config).health().get("sandbox"))
            if health is not None and health.consecutive_failures >= 2:
                break
        assert not task.done()
        assert health is not None and health.consecutive_failures >= 2
        assert "TransientError" in (health.last_error or "") and "connect" in (health.last_error or "").lower()
        # the helpdesk comes up on that port: the daemon recovers and routes
        with running_sandbox(None, token=SANDBOX_TOKEN, port=port) as sandbox:
            ids = seed(sandbox, 5)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if all(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids):
                    break
            assert all(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids)
            daemon.request_stop()
            await asyncio.wait_for(task, 10)
        assert decisions(config).health()["sandbox"].consecutive_failures == 0

    asyncio.run(scenario())
    failing = [r for r in caplog.records if "poll failed" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered after" in r.getMessage()]
    assert len(failing) == 1, "the transition to failing is logged once"
    assert len(recovered) == 1, "the recovery is logged once"


# --------------------------------------------------------------------------- bad answers


BAD_ANSWERS = {
    "malformed-json": (dict(status=200, body='{"items": [', content_type="application/json"), "ProtocolError"),
    "html-error-page": (
        dict(status=502, body="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"),
        "HTTP 502",
    ),
    "html-200": (dict(status=200, body="<html><body>Login</body></html>", content_type="text/html"), "not JSON"),
    "500": (dict(status=500), "HTTP 500"),
    "401": (dict(status=401, body='{"error": "bad token"}'), "AuthenticationError"),
    "429": (dict(status=429, headers={"Retry-After": "1"}), "HTTP 429"),
    "timeout": (dict(status=0, delay=3.0), "timed out"),
}


@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
def test_bad_answers_fail_the_poll_clearly_and_nothing_is_lost(tmp_path: Path, kind: str) -> None:
    fault, expected = BAD_ANSWERS[kind]
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 4)
        config = sandbox_config(tmp_path, sandbox.api)
        sandbox.faults.add(path=r"^/api/tickets$", method="GET", times=-1, **fault)
        started = time.monotonic()
        result = asyncio.run(keyword_daemon(config).run_once())["sandbox"]
        elapsed = time.monotonic() - started
        assert result.error is not None and expected in f"{result.error.__class__.__name__}: {result.error}"
        health = decisions(config).health()["sandbox"]
        assert health.consecutive_failures == 1 and expected in (health.last_error or "")
        assert decisions(config).counts() == {}
        if kind == "429":
            assert result.retry_after == pytest.approx(1, abs=0.5)
        if kind == "timeout":
            assert elapsed < 10
        # the helpdesk is fine again: everything is routed, once
        sandbox.faults.clear()
        result = asyncio.run(keyword_daemon(config).run_once())["sandbox"]
        assert result.ok and result.outcomes == {"applied": 4}
        assert all(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids)
        assert all(len(sandbox.db.list_notes(i)) == 1 for i in ids)


def test_write_failing_transiently_is_retried_at_the_next_poll(tmp_path: Path) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 3)
        config = sandbox_config(tmp_path, sandbox.api, max_concurrent_writes=1)
        sandbox.faults.add(path=rf"^/api/tickets/{ids[1]}$", method="PATCH", status=503, times=-1)
        result = asyncio.run(keyword_daemon(config).run_once())["sandbox"]
        assert result.error is not None and "503" in str(result.error)
        assert decisions(config).counts()["sandbox"] == {"applied": 1}
        sandbox.faults.clear()
        result = asyncio.run(keyword_daemon(config).run_once())["sandbox"]
        assert result.ok and result.outcomes == {"applied": 2}
        assert all(len(sandbox.db.list_notes(i)) == 1 for i in ids)


# --------------------------------------------------------------------------- a queue the system does not have


def test_mapping_to_a_missing_queue_fails_that_ticket_and_the_daemon_continues(tmp_path: Path) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        printer = sandbox.db.create_ticket("printer", "my printer is broken").id
        holiday = sandbox.db.create_ticket("holiday", "holiday request for May").id
        routing = {"queue": {"map": {"it": "Hardware", "hr": "Personnel"}, "threshold": 0.5}}
        config = sandbox_config(tmp_path, sandbox.api, routing=routing)
        result = asyncio.run(keyword_daemon(config).run_once())["sandbox"]
        assert result.ok
        assert result.outcomes == {"applied": 1, "failed": 1}
        record = decisions(config).get("sandbox", str(holiday))
        assert record.status == "failed" and "UnknownValueError" in record.error and "Personnel" in record.error
        assert sandbox.db.get_ticket(holiday).queue == "Inbox"
        assert sandbox.db.get_ticket(printer).queue == "Hardware"


# --------------------------------------------------------------------------- shutdown


@pytest.mark.slow
def test_stop_request_during_a_poll_finishes_cleanly(tmp_path: Path) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 40)
        # each write takes 0.2 s: the poll is still busy when the stop comes
        sandbox.faults.add(path=r"^/api/tickets/\d+$", method="PATCH", status=0, delay=0.2, times=-1)
        config = sandbox_config(tmp_path, sandbox.api, max_concurrent_writes=2, page_size=40)
        daemon = keyword_daemon(config)

        async def scenario() -> None:
            task = asyncio.create_task(daemon.run())
            while not any(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids):
                await asyncio.sleep(0.05)
            daemon.request_stop()
            await asyncio.wait_for(task, 10)

        started = time.monotonic()
        asyncio.run(scenario())
        assert time.monotonic() - started < 15
        counts = decisions(config).counts()["sandbox"]
        assert "claimed" not in counts  # the writes in flight were finished and recorded
        assert 0 < counts["applied"] < 40
        routed = [i for i in ids if sandbox.db.get_ticket(i).queue == "Hardware"]
        assert len(routed) == counts["applied"]
        # the next start routes the rest
        asyncio.run(keyword_daemon(config).run_once())
        assert all(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids)
        assert all(len(sandbox.db.list_notes(i)) == 1 for i in ids)


def test_shutdown_timeout_abandons_the_batch_and_the_restart_reconciles(tmp_path: Path) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 3)
        sandbox.faults.add(path=r"^/api/tickets/\d+$", method="PATCH", status=0, delay=1.5, times=-1)
        config = sandbox_config(tmp_path, sandbox.api, max_concurrent_writes=3)
        config.daemon.shutdown_timeout = 0.3
        daemon = keyword_daemon(config)

        async def scenario() -> None:
            task = asyncio.create_task(daemon.run())
            await asyncio.sleep(0.1)
            while sandbox.faults.hits == 0:
                await asyncio.sleep(0.02)
            daemon.request_stop()
            await asyncio.wait_for(task, 5)

        asyncio.run(scenario())
        counts = decisions(config).counts()["sandbox"]
        # abandoned during the write: left for reconciliation (claims cancelled before their write were released)
        assert 1 <= counts.get("claimed", 0) <= 3 and set(counts) == {"claimed"}
        time.sleep(1.5)  # the sandbox finishes the writes it received
        sandbox.faults.clear()
        result = asyncio.run(keyword_daemon(config).run_once())["sandbox"]
        assert result.ok and result.reconciled == counts["claimed"]
        assert decisions(config).counts()["sandbox"] == {"applied": 3}
        assert all(len(sandbox.db.list_notes(i)) == 1 for i in ids)  # the missing notes written, none twice
        assert all(sandbox.db.get_ticket(i).queue == "Hardware" for i in ids)


# --------------------------------------------------------------------------- the real process


def _process_config(tmp_path: Path, sandbox, model_dirs, *, daemon: dict | None = None, connection: dict | None = None,
                    **system) -> Path:
    """A config file for a daemon process: JSON logs, the tiny models, the sandbox with its token in a file."""
    secret = tmp_path / "token"
    secret.write_text(SANDBOX_TOKEN)
    sys_cfg = {
        "type": "generic_rest",
        "connection": {"base_url": sandbox.api, "auth": {"type": "bearer", "token_file": str(secret)}, **(connection or {})},
        "source": {"queues": ["Inbox"]},
        **system,
        "routing": {"queue": {"map": {"*": "{label}"}, "threshold": 0.0}},
    }
    config = {
        "state_dir": str(tmp_path / "state"),
        "logging": {"format": "json"},
        **({"daemon": daemon} if daemon else {}),
        "model": {"device": "cpu", "paths": {k: str(v) for k, v in model_dirs.items()}},
        "systems": {"sandbox": sys_cfg},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start_daemon_process(config_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_daemon_process_routes_then_exits_0_on_sigterm(tmp_path: Path, model_dirs) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 5)
        proc = _start_daemon_process(_process_config(tmp_path, sandbox, model_dirs, poll_interval=0.5))
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if all(sandbox.db.get_ticket(i).queue != "Inbox" for i in ids):
                    break
                time.sleep(0.2)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, output
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        messages = [line["message"] for line in lines]
        assert sum("decision system=sandbox" in m for m in messages) == 5
        assert any(m.startswith("shutdown requested") for m in messages) and messages[-1] == "stopped"
        store = Store(f"sqlite:///{(tmp_path / 'state' / 'connector.db').resolve()}")
        try:
            with store.session() as s:
                (lease,) = s.scalars(select(InstanceLease)).all()
            assert lease.pid == proc.pid and lease.instance_id.startswith(f"{socket.gethostname()}-{proc.pid}-")
            assert as_utc(lease.expires_at) <= utcnow()  # released on SIGTERM, not left to expire
        finally:
            store.dispose()
        assert SANDBOX_TOKEN not in output and "my printer is broken" not in output


def _kill_while_writing(config_path: Path, routed, kills: int, outputs: list[str]) -> None:
    """Start the daemon ``kills`` times and SIGKILL it soon after it has routed a few more tickets."""
    rng = random.Random(11)
    for _ in range(kills):
        before = routed()
        proc = _start_daemon_process(config_path)
        try:
            deadline = time.monotonic() + 90
            while routed() < before + 4 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            outputs.append(proc.communicate(timeout=30)[0])


def _run_until_all_settled(tmp_path: Path, config_path: Path, routed, total: int, outputs: list[str]) -> int:
    """A last daemon runs until every ticket is routed and no decision is left claimed; SIGTERM; its exit code."""
    proc = _start_daemon_process(config_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if routed() == total and "claimed" not in decisions_at(tmp_path).counts().get("sandbox", {"claimed": 1}):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        outputs.append(proc.communicate(timeout=30)[0])
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


@pytest.mark.slow
def test_sigkills_in_the_middle_of_writes_lose_no_note_record_or_log_line(tmp_path: Path, model_dirs) -> None:
    """Issue #11 items 2a and 5e with real processes: the daemon is SIGKILLed again and again while it writes
    (the note requests are slowed, so kills land between the fields and the note); in the end every ticket was
    moved once, has exactly one note, one ``applied`` record, and one decision log line."""
    kills = 5
    outputs: list[str] = []
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 100)
        sandbox.faults.add(path=r"/notes$", method="POST", status=0, delay=0.05, times=-1)
        config_path = _process_config(
            tmp_path, sandbox, model_dirs, daemon={"instance_id": "killed-daemon"},
            connection={"paging": {"style": "after"}}, poll_interval=0.3, page_size=20,
        )

        def routed() -> int:
            return sum(sandbox.db.get_ticket(i).queue != "Inbox" for i in ids)

        _kill_while_writing(config_path, routed, kills, outputs)
        returncode = _run_until_all_settled(tmp_path, config_path, routed, len(ids), outputs)
        assert returncode == 0, outputs[-1][-3000:]
        assert decisions_at(tmp_path).counts()["sandbox"] == {"applied": len(ids)}
        for i in ids:
            assert sandbox.db.get_ticket(i).version == 2, i  # moved by exactly one update
            notes = sandbox.db.list_notes(i)
            assert len(notes) == 1, (i, [n.body for n in notes])  # none lost, none twice
            assert "[helpdesk-connector decision " in notes[0].body
    logged = [json.loads(line)["message"] for out in outputs for line in out.splitlines() if line.startswith("{")]
    tickets = [m.split()[2] for m in logged if m.startswith("decision system=sandbox")]
    assert len(tickets) == len(set(tickets)), "a decision was logged twice"
    assert len(tickets) >= len(ids) - kills  # (a kill between the commit and its log line would drop one)
    assert sum("reconciling" in m for m in logged) >= 1


def decisions_at(tmp_path: Path) -> DecisionStore:
    return decisions(make_config(tmp_path, systems={}))


def test_odd_bodies_through_the_sandbox_with_a_tiny_model(tmp_path: Path, model_dirs) -> None:
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = [
            sandbox.db.create_ticket("empty body", "").id,
            sandbox.db.create_ticket("huge body", "printer " * 131_072).id,  # 1 MiB
            sandbox.db.create_ticket("html only", "<html><body><p>VPN <b>down</b></p><script>x()</script></body></html>").id,
            sandbox.db.create_ticket("broken bytes", b"caf\xe9 \xff printer".decode("utf-8", errors="replace")).id,
        ]
        routing = {"queue": {"map": {"*": "{label}"}, "threshold": 0.0}}
        config = sandbox_config(tmp_path, sandbox.api, models=model_dirs, routing=routing)
        result = asyncio.run(Daemon(config).run_once())["sandbox"]
        assert result.ok, result.error
        assert result.outcomes == {"applied": 4}
        assert all(sandbox.db.get_ticket(i).queue in ("Hardware", "Software", "Access") for i in ids)
