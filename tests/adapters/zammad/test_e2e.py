"""End to end: the daemon routes tickets through the Zammad adapter against the Zammad stand-in."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from adapters.base import TransientError
from connector.config import AppConfig, parse_config
from connector.store.db import Store
from connector.store.decisions import DecisionStore
from tests.support.daemon import assert_outage_loses_and_repeats_nothing, daemon_polls, decision_counts
from tests.support.zammad_standin import RunningStandin, ZammadStandin

SYSTEM = "zammad"
ROUTING = {
    "queue": {"map": {"it": "2nd Level", "hr": "Sales", "finance": "Service Desk"}, "threshold": 0.5},
    "priority": {"map": {"low": "1 low", "normal": "2 normal", "high": "3 high"}, "threshold": 0.5},
}
TEXTS = [
    ("Laptop", "<p>My <b>laptop</b> screen flickers</p>", "text/html"),
    ("Holiday", "I would like to book holiday in May", "text/plain"),
    ("Invoice", "The invoice 4711 is wrong, urgent", "text/plain"),
]


def config(url: str, tmp_path: Path, *, mode: str = "apply", routing: dict[str, Any] | None = None,
           **connection: Any) -> AppConfig:
    conn = {"base_url": url, "token": "agent-token", "search_index_lag": 60, "retry_attempts": 3}
    conn.update(connection)
    return parse_config({
        "state_dir": str(tmp_path),
        "systems": {SYSTEM: {
            "type": "zammad",
            "connection": conn,
            "source": {"queues": ["Incoming"], "states": ["new"]},
            "page_size": 4,
            "mode": mode,
            "routing": routing or ROUTING,
        }},
    })


def create(standin: ZammadStandin, n: int) -> list[int]:
    out = []
    for i in range(n):
        title, body, ctype = TEXTS[i % len(TEXTS)]
        out.append(standin.create_ticket(f"{title} {i}", body, content_type=ctype))
        standin.advance(1)
    standin.refresh_index()
    return out


#: ``polls(cfg, store, count=1, between=None, classifier=None)``: polls of this system by one daemon
polls = functools.partial(daemon_polls, system=SYSTEM)
statuses = functools.partial(decision_counts, system=SYSTEM)
run = asyncio.run


def writes(standin: ZammadStandin) -> list[Any]:
    return [r for r in standin.requests if r.method in ("PUT", "POST")]


# --------------------------------------------------------------------------- modes


def test_apply_routes_every_ticket_once(server: RunningStandin, standin: ZammadStandin, store: Store,
                                        tmp_path: Path) -> None:
    ids = create(standin, 10)
    standin.create_ticket("Elsewhere", "not ours", group="Sales")
    first, second = run(polls(config(server.url, tmp_path), store, 2))
    assert first.ok and first.new == 10 and first.outcomes["applied"] == 10, first.error
    expected = {"Laptop": ("2nd Level", "2 normal"), "Holiday": ("Sales", "2 normal"),
                "Invoice": ("Service Desk", "3 high")}
    for tid in ids:
        view = standin.ticket_view(tid)
        assert (view["group"], view["priority"]) == expected[view["title"].split()[0]]
        notes = standin.notes(tid)
        assert len(notes) == 1 and "helpdesk-connector (apply)" in notes[0]["body"]
    assert second.ok and second.new == 0
    assert len(writes(standin)) == 10  # one atomic PUT (fields + note) per ticket, nothing on the second poll
    # per ticket: its articles once (listing), one re-read of the ticket before writing, one PUT
    paths = [r.path for r in standin.requests]
    assert sum(p.startswith("/api/v1/ticket_articles/by_ticket/") for p in paths) == 10
    assert sum(p.startswith("/api/v1/tickets/") and p != "/api/v1/tickets/search" for p in paths) == 20
    assert statuses(store) == {"applied": 10}
    assert DecisionStore(store, "x").get_cursor(SYSTEM) is not None


def test_suggest_writes_only_notes_and_never_twice(server: RunningStandin, standin: ZammadStandin, store: Store,
                                                   tmp_path: Path) -> None:
    ids = create(standin, 5)
    results = run(polls(config(server.url, tmp_path, mode="suggest"), store, 3,
                        between=lambda i: standin.advance(3600)))  # later polls run past the lag window
    assert results[0].outcomes["suggested"] == 5 and all(r.ok for r in results)
    for tid in ids:
        view = standin.ticket_view(tid)
        assert view["group"] == "Incoming" and view["state"] == "new"
        assert len(standin.notes(tid)) == 1 and "suggest" in standin.notes(tid)[0]["body"]
    assert [r.path for r in writes(standin)] == ["/api/v1/ticket_articles"] * 5


def test_dry_run_writes_nothing(server: RunningStandin, standin: ZammadStandin, store: Store, tmp_path: Path) -> None:
    ids = create(standin, 4)
    (result,) = run(polls(config(server.url, tmp_path, mode="dry-run"), store))
    assert result.outcomes["dry_run"] == 4
    assert writes(standin) == [] and all(standin.notes(t) == [] for t in ids)
    assert statuses(store) == {"dry_run": 4}


def test_tiny_transformer_model_routes_through_zammad(server: RunningStandin, standin: ZammadStandin, store: Store,
                                                      tmp_path: Path) -> None:
    from tests.support.tiny_model import build_tiny_classifier

    model = build_tiny_classifier(tmp_path / "models", ["it", "hr"], ["low", "high"], versions=("tq-1", "tp-1"))
    ids = create(standin, 3)
    routing = {"queue": {"map": {"*": "2nd Level"}, "threshold": 0.0},
               "priority": {"map": {"low": "1 low", "high": "3 high"}, "threshold": 0.0}}
    (result,) = run(polls(config(server.url, tmp_path, routing=routing), store, classifier=model))
    assert result.outcomes["applied"] == 3, result.error
    assert all(standin.ticket_view(t)["group"] == "2nd Level" for t in ids)
    assert all("tq-1" in standin.notes(t)[0]["body"] for t in ids)


# --------------------------------------------------------------------------- people and outages


@pytest.mark.parametrize("change", [{"group": "Sales"}, {"priority": "1 low"}, {"state": "open"}])
def test_ticket_changed_by_a_person_in_between_is_left_alone(
    server: RunningStandin, standin: ZammadStandin, store: Store, tmp_path: Path, change: dict[str, str]
) -> None:
    ids = create(standin, 3)
    touched = ids[1]

    def person(method: str, path: str) -> None:
        # the person acts after the daemon listed the ticket, just before it re-reads it to write
        if method == "GET" and path == f"/api/v1/tickets/{touched}" and standin.ticket_view(touched)["updated_by"] \
                != standin.human.login:
            standin.human_update(touched, **change)

    standin.before_request = person
    (result,) = run(polls(config(server.url, tmp_path), store))
    assert result.outcomes["applied"] == 2 and result.outcomes["changed"] == 1, result.outcomes
    view = standin.ticket_view(touched)
    assert all(view[k] == v for k, v in change.items())
    assert standin.notes(touched) == [] and view["updated_by"] == standin.human.login
    assert DecisionStore(store, "x").get(SYSTEM, str(touched)).status == "changed"


def test_system_down_for_a_while_then_back(server: RunningStandin, standin: ZammadStandin, store: Store,
                                           tmp_path: Path) -> None:
    ids = create(standin, 6)
    standin.down = True
    cfg = config(server.url, tmp_path, retry_attempts=1)
    down1, down2 = run(polls(cfg, store, 2))
    assert isinstance(down1.error, TransientError) and isinstance(down2.error, TransientError)
    assert statuses(store) == {} and DecisionStore(store, "x").get_cursor(SYSTEM) is None
    standin.down = False
    (back,) = run(polls(cfg, store))
    assert back.ok and back.outcomes["applied"] == 6
    assert all(len(standin.notes(t)) == 1 for t in ids)


def test_outage_in_the_middle_of_a_poll(server: RunningStandin, standin: ZammadStandin, store: Store,
                                        tmp_path: Path) -> None:
    ids = create(standin, 8)
    puts = []

    def outage(method: str, path: str) -> None:
        if method == "PUT":
            puts.append(path)
            if len(puts) == 3:
                standin.down = True  # Zammad goes away after the first writes

    standin.before_request = outage
    cfg = config(server.url, tmp_path, retry_attempts=1)
    assert_outage_loses_and_repeats_nothing(standin, polls, cfg, store, ids)
    assert all(standin.ticket_view(t)["group"] != "Incoming" for t in ids)


def test_rate_limited_poll_is_retried_transparently(server: RunningStandin, standin: ZammadStandin, store: Store,
                                                    tmp_path: Path) -> None:
    ids = create(standin, 4)
    standin.fail_next(2, 429, retry_after="0")
    (result,) = run(polls(config(server.url, tmp_path), store))
    assert result.ok and result.outcomes["applied"] == 4
    assert [r.status for r in standin.requests[:2]] == [429, 429]
    assert all(len(standin.notes(t)) == 1 for t in ids)


def test_index_lag_across_daemon_restarts(server: RunningStandin, standin: ZammadStandin, store: Store,
                                          tmp_path: Path) -> None:
    standin.index_lag = 30
    late = standin.create_ticket("Laptop late", "laptop broken")
    standin.advance(10)
    early = standin.create_ticket("Laptop early", "laptop broken")
    standin._index[early][0] = (float("-inf"), standin._index[early][0][1])  # indexed at once
    cfg = config(server.url, tmp_path)
    (first,) = run(polls(cfg, store))
    assert first.outcomes["applied"] == 1 and standin.notes(early) and not standin.notes(late)
    standin.advance(25)
    (second,) = run(polls(cfg, store))  # a new daemon: the cursor comes from the store
    assert second.outcomes["applied"] == 1 and len(standin.notes(late)) == 1 and len(standin.notes(early)) == 1


def test_unknown_group_in_the_mapping_fails_that_ticket_only(server: RunningStandin, standin: ZammadStandin,
                                                             store: Store, tmp_path: Path) -> None:
    ids = create(standin, 3)  # Laptop (it), Holiday (hr), Invoice (finance)
    routing = dict(ROUTING, queue={"map": {"it": "2nd Level", "hr": "Human Resources", "finance": "Service Desk"},
                                   "threshold": 0.5})
    (result,) = run(polls(config(server.url, tmp_path, routing=routing), store))
    assert result.ok and result.outcomes["applied"] == 2 and result.outcomes["failed"] == 1
    record = DecisionStore(store, "x").get(SYSTEM, str(ids[1]))
    assert record.status == "failed" and "No lookup value found" in (record.error or "")
    assert standin.ticket_view(ids[1])["group"] == "Incoming" and standin.notes(ids[1]) == []


# --------------------------------------------------------------------------- check-config --online


def test_check_config_online(server: RunningStandin, standin: ZammadStandin, tmp_path: Path) -> None:
    from connector.cli.daemon import online_problems

    assert run(online_problems(config(server.url, tmp_path))) == []
    routing = {"queue": {"map": {"it": "Helpdesk"}, "threshold": 0.5},
               "priority": {"map": {"high": "4 urgent"}, "threshold": 0.5}}
    problems = run(online_problems(config(server.url, tmp_path, routing=routing)))
    assert {p.key for p in problems} == {f"systems.{SYSTEM}.routing.queue.map", f"systems.{SYSTEM}.routing.priority.map"}
    bad_token = run(online_problems(config(server.url, tmp_path, token="nope")))
    assert [p.key for p in bad_token] == [f"systems.{SYSTEM}.connection"]
    assert "Can't find User for Token" in bad_token[0].message and "nope" not in bad_token[0].message


# --------------------------------------------------------------------------- listing: list, and the training export


def test_apply_with_the_plain_ticket_list(server: RunningStandin, standin: ZammadStandin, store: Store,
                                          tmp_path: Path) -> None:
    ids = create(standin, 6)
    standin.create_ticket("Done", "x", state="closed")
    first, second = run(polls(config(server.url, tmp_path, listing="list"), store, 2))
    assert first.ok and first.outcomes["applied"] == 6 and second.new == 0, first.error
    assert all(len(standin.notes(t)) == 1 for t in ids)
    assert not any(r.path == "/api/v1/tickets/search" for r in standin.requests)


def test_training_export_reads_resolved_tickets(server: RunningStandin, standin: ZammadStandin, store: Store,
                                                tmp_path: Path) -> None:
    from connector.learning.export import Exporter

    done = [
        standin.create_ticket("Laptop", "<p>laptop <b>broken</b></p>", group="2nd Level", priority="3 high",
                              state="closed", content_type="text/html"),
        standin.create_ticket("Holiday", "holiday in May", group="Sales", state="closed"),
    ]
    standin.create_ticket("Open one", "x", group="Sales", state="open")
    standin.refresh_index()
    cfg = config(server.url, tmp_path)
    stats = run(Exporter(cfg, store).export_system(SYSTEM))
    assert stats.tickets == 2 and stats.new == 2, stats.as_dict()
    from sqlalchemy import select

    from connector.store.tables import TrainingExample

    with store.session() as session:
        rows = {r.ticket_id: (r.text, r.labels) for r in session.scalars(select(TrainingExample))}
    text, labels = rows[str(done[0])]
    assert labels == {"queue": "it", "priority": "high"}  # Zammad values mapped back to model labels
    assert "laptop" in text and "broken" in text and "<b>" not in text  # HTML cleaned by ticket_text
    assert rows[str(done[1])][1]["queue"] == "hr"
    again = run(Exporter(cfg, store).export_system(SYSTEM))
    assert again.new == 0
    searches = [r for r in standin.requests if r.path == "/api/v1/tickets/search"]
    assert searches[0].query["query"].startswith('state.name:"closed"') and len(done) == 2
