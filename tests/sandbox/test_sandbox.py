"""The sandbox helpdesk: its REST API over real HTTP on 127.0.0.1, its DB, seeding and CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from connector.sandbox import SandboxDB, running_sandbox
from connector.sandbox.db import DEFAULT_PRIORITIES, DEFAULT_QUEUES, read_seed_csv
from tests.support.net import free_port
from tests.support.paths import REPO



@pytest.fixture()
def sandbox(tmp_path: Path):
    with running_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture()
def client(sandbox):
    with httpx.Client(base_url=sandbox.api, timeout=10) as c:
        yield c


def test_handle_is_the_base_url(sandbox) -> None:
    assert sandbox.startswith("http://127.0.0.1:")
    assert sandbox.api == f"{sandbox}/api"
    assert httpx.get(f"{sandbox}/api/health").json()["status"] == "ok"


def test_default_value_lists(client) -> None:
    assert [q["name"] for q in client.get("/queues").json()["items"]] == list(DEFAULT_QUEUES)
    assert [p["name"] for p in client.get("/priorities").json()["items"]] == list(DEFAULT_PRIORITIES)
    states = [s["name"] for s in client.get("/states").json()["items"]]
    assert {"new", "open", "resolved", "closed"} <= set(states)
    assert "Inbox" in DEFAULT_QUEUES and "Triage" in DEFAULT_QUEUES


def test_create_get_and_defaults(client) -> None:
    created = client.post("/tickets", json={"subject": "Printer jam", "body": "Tray 2 jams"})
    assert created.status_code == 201
    ticket = created.json()
    assert ticket["queue"] == "Inbox" and ticket["priority"] == "normal" and ticket["state"] == "new"
    assert ticket["version"] == 1 and ticket["created_at"] == ticket["updated_at"] and ticket["resolved_at"] is None
    got = client.get(f"/tickets/{ticket['id']}").json()
    assert got == ticket


def test_paging_styles_cover_every_ticket_once(sandbox, client) -> None:
    for i in range(23):
        sandbox.db.create_ticket(f"t{i}", "b")
    by_page = []
    page = 1
    while True:
        answer = client.get("/tickets", params={"page": page, "per_page": 10}).json()
        by_page += [t["id"] for t in answer["items"]]
        assert answer["total"] == 23
        if answer["next_page"] is None:
            assert answer["has_more"] is False
            break
        page = answer["next_page"]
    assert by_page == list(range(1, 24)) and page == 3

    by_offset = []
    offset = 0
    while offset is not None:
        answer = client.get("/tickets", params={"offset": offset, "limit": 7}).json()
        by_offset += [t["id"] for t in answer["items"]]
        offset = answer["next_offset"]
    assert by_offset == by_page

    by_after = []
    after = None
    while True:
        params = {"per_page": 10} | ({"after_id": after} if after is not None else {})
        answer = client.get("/tickets", params=params).json()
        by_after += [t["id"] for t in answer["items"]]
        after = answer["next_after_id"]
        if after is None:
            break
    assert by_after == by_page


def test_filters(sandbox, client) -> None:
    a = sandbox.db.create_ticket("a", "b")
    sandbox.db.create_ticket("b", "b", queue="Hardware", priority="high")
    sandbox.db.create_ticket("c", "b", queue="Access", state="open")
    ids = lambda **p: [t["id"] for t in client.get("/tickets", params=p).json()["items"]]  # noqa: E731
    assert ids(queue="Inbox") == [a.id]
    assert ids(queue=["Hardware", "Access"]) == [2, 3]
    assert ids(state="open") == [3]
    assert ids(priority="high") == [2]
    mark = client.get("/tickets/3").json()["updated_at"]  # the newest ticket
    time.sleep(0.002)
    sandbox.db.update_ticket(2, priority="low")
    assert ids(updated_since=mark) == [2, 3]  # >= : the ticket at the mark itself is included
    later = sandbox.db.get_ticket(2).updated_at
    assert ids(updated_since=later) == [2]
    bad = client.get("/tickets", params={"updated_since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_update_bumps_version_and_time(sandbox, client) -> None:
    t = sandbox.db.create_ticket("s", "b")
    first = client.patch(f"/tickets/{t.id}", json={"queue": "Hardware"}).json()
    second = client.patch(f"/tickets/{t.id}", json={"priority": "high"}).json()
    assert (first["version"], second["version"]) == (2, 3)
    assert t.updated_at < first["updated_at"] < second["updated_at"]
    assert second["queue"] == "Hardware" and second["priority"] == "high"
    # an update with no field still counts as a change (someone touched the ticket)
    third = client.patch(f"/tickets/{t.id}", json={}).json()
    assert third["version"] == 4 and third["updated_at"] > second["updated_at"]


def test_update_errors(sandbox, client) -> None:
    t = sandbox.db.create_ticket("s", "b")
    unknown = client.patch(f"/tickets/{t.id}", json={"queue": "Nowhere"})
    assert unknown.status_code == 422
    err = unknown.json()["error"]
    assert err["code"] == "unknown_value" and err["field"] == "queue" and "Hardware" in err["allowed"]
    assert client.patch(f"/tickets/{t.id}", json={"priority": "urgent"}).json()["error"]["field"] == "priority"
    assert sandbox.db.get_ticket(t.id).version == 1  # refused updates change nothing
    missing = client.patch("/tickets/999", json={"queue": "Hardware"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    extra = client.patch(f"/tickets/{t.id}", json={"group": "x"})
    assert extra.status_code == 400
    conflict = client.patch(f"/tickets/{t.id}", json={"queue": "HR", "if_version": 7})
    assert conflict.status_code == 409 and conflict.json()["error"]["actual"] == 1
    assert client.patch(f"/tickets/{t.id}", json={"queue": "HR", "if_version": 1}).status_code == 200


def test_seed_as_new_creates_the_files_queues(tmp_path: Path) -> None:
    seed = tmp_path / "labelled.csv"
    seed.write_text(
        "subject,body,queue,priority\nPayslip wrong,My payslip is wrong,Payroll,urgent\nPrinter,Jammed,Hardware,high\n",
        encoding="utf-8",
    )
    with running_sandbox(tmp_path, seed=seed, seed_as_new=True) as sb, httpx.Client(base_url=sb.api, timeout=10) as c:
        rows, _, _ = sb.db.list_tickets(limit=10)
        assert {(t.queue, t.state, t.priority) for t in rows} == {("Inbox", "new", "normal")}  # as new: unrouted
        assert [q["name"] for q in c.get("/queues").json()["items"]] == [*DEFAULT_QUEUES, "Payroll"]
        assert "urgent" in [p["name"] for p in c.get("/priorities").json()["items"]]
        # an agent can move the ticket to the queue the file named
        moved = c.patch(f"/tickets/{rows[0].id}", json={"queue": "Payroll", "priority": "urgent"})
        assert moved.status_code == 200, moved.text


def test_api_adds_queues(sandbox, client) -> None:
    t = sandbox.db.create_ticket("s", "b")
    assert client.patch(f"/tickets/{t.id}", json={"queue": "Facilities"}).status_code == 422
    created = client.post("/queues", json={"name": " Facilities "})
    assert created.status_code == 201 and created.json() == {"name": "Facilities"}
    again = client.post("/queues", json={"name": "Facilities"})
    assert again.status_code == 200 and again.json() == {"name": "Facilities"}  # idempotent, no duplicate
    assert [q["name"] for q in client.get("/queues").json()["items"]] == [*DEFAULT_QUEUES, "Facilities"]
    assert client.patch(f"/tickets/{t.id}", json={"queue": "Facilities"}).status_code == 200
    for bad in ({"name": "  "}, {}, {"name": "x", "position": 1}):
        response = client.post("/queues", json=bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request", bad


def test_notes(sandbox, client) -> None:
    t = sandbox.db.create_ticket("s", "b")
    assert client.get(f"/tickets/{t.id}/notes").json() == {"items": []}
    made = client.post(f"/tickets/{t.id}/notes", json={"body": "routed to HR", "subject": "Automatic routing"})
    assert made.status_code == 201 and made.json()["internal"] is True
    notes = client.get(f"/tickets/{t.id}/notes").json()["items"]
    assert [(n["subject"], n["body"]) for n in notes] == [("Automatic routing", "routed to HR")]
    assert client.post("/tickets/42/notes", json={"body": "x"}).status_code == 404
    assert client.get("/tickets/42/notes").status_code == 404


def test_resolve_and_resolved_listing(sandbox, client) -> None:
    a = sandbox.db.create_ticket("a", "b")
    b = sandbox.db.create_ticket("b", "b")
    sandbox.db.create_ticket("c", "b")
    done = client.post(f"/tickets/{a.id}/resolve", json={"queue": "Access", "priority": "high"}).json()
    assert done["state"] == "resolved" and done["queue"] == "Access" and done["resolved_at"] == done["updated_at"]
    time.sleep(0.002)
    mark = sandbox.db.resolve_ticket(b.id, queue="HR", state="closed").resolved_at
    listed = client.get("/tickets/resolved").json()
    assert [t["id"] for t in listed["items"]] == [a.id, b.id] and listed["total"] == 2
    assert [t["id"] for t in client.get("/tickets/resolved", params={"resolved_since": mark}).json()["items"]] == [b.id]
    # the same filter on the general listing
    assert [t["id"] for t in client.get("/tickets", params={"resolved_since": mark}).json()["items"]] == [b.id]
    # reopening clears resolved_at; a later update of a resolved ticket keeps it
    sandbox.db.update_ticket(a.id, state="open")
    assert sandbox.db.get_ticket(a.id).resolved_at is None
    kept = sandbox.db.update_ticket(b.id, priority="low")
    assert kept.resolved_at == mark
    assert client.post(f"/tickets/{a.id}/resolve", json={"state": "open"}).status_code == 400


def test_bearer_auth(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, token="s3cret") as sb:
        assert httpx.get(f"{sb.api}/health").status_code == 200
        denied = httpx.get(f"{sb.api}/tickets")
        assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
        assert denied.json()["error"]["code"] == "unauthorized"
        assert httpx.get(f"{sb.api}/tickets", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{sb.api}/tickets", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_fault_injection(sandbox, client) -> None:
    sandbox.faults.add(path=r"^/api/queues$", status=502, body="<html><h1>Bad gateway</h1></html>", content_type="text/html")
    first = client.get("/queues")
    assert first.status_code == 502 and "Bad gateway" in first.text
    assert client.get("/queues").status_code == 200  # times=1 by default
    made = httpx.post(f"{sandbox}/_sandbox/faults", json={"path": "/tickets", "status": 200, "body": "{not json", "times": 2})
    assert made.status_code == 201
    assert client.get("/tickets").text == "{not json"
    assert client.get("/tickets").text == "{not json"
    assert client.get("/tickets").json()["total"] == 0
    sandbox.faults.add(path="/tickets", status=500, times=-1)
    assert client.get("/tickets").status_code == 500 and client.get("/tickets").status_code == 500
    httpx.delete(f"{sandbox}/_sandbox/faults")
    assert client.get("/tickets").status_code == 200
    sandbox.faults.add(path="/health", status=0, delay=0.3)  # slow, then the real answer
    started = time.perf_counter()
    assert client.get("/health").status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_fault_probability_hits_a_share_of_requests(sandbox, client) -> None:
    made = httpx.post(f"{sandbox}/_sandbox/faults", json={"path": "/queues", "status": 503, "times": -1, "probability": 0.3})
    assert made.status_code == 201
    statuses = [client.get("/queues").status_code for _ in range(300)]
    hit = statuses.count(503)
    assert set(statuses) == {200, 503}
    assert 45 <= hit <= 135, hit  # 90 expected; far outside only if the probability is ignored or inverted
    assert httpx.get(f"{sandbox}/_sandbox/faults").json() == {"hits": hit, "active": 1}
    assert httpx.post(f"{sandbox}/_sandbox/faults", json={"path": "/queues", "probability": 0}).status_code == 400  # the sandbox answers validation errors with 400


def test_db_persists_and_resets(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = SandboxDB(path)
    db.create_ticket("kept", "b")
    db.set_queues(["Inbox", "Only"])
    db.close()
    again = SandboxDB(path)
    assert again.get_ticket(1).subject == "kept" and again.queues() == ["Inbox", "Only"]
    again.close()
    fresh = SandboxDB(path, reset=True)
    assert fresh.count_tickets() == 0 and fresh.queues() == list(DEFAULT_QUEUES)
    fresh.close()


def test_seed_csv_variants(tmp_path: Path) -> None:
    full = tmp_path / "full.csv"
    full.write_text(
        "subject,body,queue,priority,state\n"
        "Laptop broken,Screen flickers,Hardware,high,new\n"
        "Need access,Please grant the share,Access,,open\n"
        "Payroll,Question about my payslip,Payroll,normal,resolved\n",
        encoding="utf-8",
    )
    db = SandboxDB(":memory:")
    assert db.seed_csv(full) == 3
    t1, t2, t3 = (db.get_ticket(i) for i in (1, 2, 3))
    assert (t1.queue, t1.priority, t1.state) == ("Hardware", "high", "new")
    assert (t2.priority, t2.state) == ("normal", "open")
    assert t3.queue == "Payroll" and "Payroll" in db.queues() and t3.resolved_at is not None

    db2 = SandboxDB(":memory:")
    db2.seed_csv(full, as_new=True, limit=2)
    assert db2.count_tickets() == 2
    assert {(t.queue, t.state, t.priority) for t in (db2.get_ticket(1), db2.get_ticket(2))} == {("Inbox", "new", "normal")}

    text_only = tmp_path / "text.csv"
    text_only.write_text("text\none two three four five six seven eight nine ten\n\nshort\n", encoding="utf-8")
    tickets = read_seed_csv(text_only)
    # the subject is the start of the body (the first words of its first line), the body the whole text
    assert [t.subject for t in tickets] == ["one two three four five six seven eight", "short"]
    assert [t.body for t in tickets] == ["one two three four five six seven eight nine ten", "short"]

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("Document,Topic_group\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs columns 'subject' and 'body'"):
        read_seed_csv(wrong)


def test_cli_serves_seeds_once_and_requires_token(tmp_path: Path) -> None:
    seed = tmp_path / "seed.csv"
    seed.write_text("subject,body,queue\nVPN down,Cannot connect,Network\nPrinter,Jammed,Printing\n", encoding="utf-8")
    db = tmp_path / "cli.db"
    port = free_port()
    env = os.environ | {"HELPDESK_SANDBOX_TOKEN": "tok-9f3k"}
    code = (
        "import typer, sys; from connector.cli.sandbox import register; app = typer.Typer(); register(app);"
        "app.command('noop')(lambda: None); sys.argv[0] = 'helpdesk-connector'; app()"
    )

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", code, "sandbox", "--port", str(port), "--db", str(db), "--seed", str(seed),
             "--seed-as-new", "--add-queue", "Facilities", "--add-queue", "Network", "--log-level", "warning"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def wait_up() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("sandbox CLI did not come up")

    for run in (1, 2):
        proc = start()
        try:
            wait_up()
            assert httpx.get(f"http://127.0.0.1:{port}/api/tickets").status_code == 401
            got = httpx.get(f"http://127.0.0.1:{port}/api/tickets", headers={"Authorization": "Bearer tok-9f3k"}).json()
            assert got["total"] == 2  # the second start does not seed again
            queues = httpx.get(f"http://127.0.0.1:{port}/api/queues", headers={"Authorization": "Bearer tok-9f3k"}).json()
            # the seed file's queue and the --add-queue ones, once each, kept across restarts
            assert [q["name"] for q in queues["items"]] == [*DEFAULT_QUEUES, "Facilities", "Printing"]
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=10)
        assert ("seeded 2 tickets" in out) == (run == 1), out
        assert "tok-9f3k" not in out  # the token is never printed


def test_sample_tickets_fit_the_default_queues_and_priorities() -> None:
    from connector.sandbox.db import sample_tickets_path

    path = sample_tickets_path()
    if not path.exists():
        pytest.skip(f"no sample data at {path}")
    tickets = read_seed_csv(path)
    assert len(tickets) >= 100
    assert {t.queue for t in tickets} <= set(DEFAULT_QUEUES) - {"Inbox", "Triage"}
    assert {t.priority for t in tickets} <= set(DEFAULT_PRIORITIES)
    db = SandboxDB(":memory:")
    db.seed_csv(path, as_new=True)
    assert db.queues() == list(DEFAULT_QUEUES)  # nothing had to be added
    rows, total, _ = db.list_tickets(queues=["Inbox"], states=["new"], limit=1000)
    assert total == len(tickets) == len(rows)


def test_sandbox_in_a_child_process(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, token="tk", process=True, queues=["Inbox", "Desk"]) as sb:
        headers = {"Authorization": "Bearer tk"}
        assert httpx.get(f"{sb.api}/tickets").status_code == 401
        t = sb.db.create_ticket("made here", "b")  # the same SQLite file, another connection
        got = httpx.get(f"{sb.api}/tickets/{t.id}", headers=headers).json()
        assert got["subject"] == "made here"
        assert [q["name"] for q in httpx.get(f"{sb.api}/queues", headers=headers).json()["items"]] == ["Inbox", "Desk"]
        httpx.patch(f"{sb.api}/tickets/{t.id}", headers=headers, json={"queue": "Desk"}).raise_for_status()
        assert sb.db.get_ticket(t.id).queue == "Desk"
        sb.faults.add(path="/api/queues", status=503)
        assert httpx.get(f"{sb.api}/queues", headers=headers).status_code == 503
        sb.faults.clear()
    with pytest.raises(ValueError, match="needs a DB file"):
        with running_sandbox(None, process=True):
            pass
