"""End to end: the daemon routes tickets through the OTOBO/Znuny adapter against the stand-in."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AuthenticationError, TransientError
from connector.config import AppConfig, parse_config
from connector.daemon import Daemon
from connector.model.classifier import ClassifierHolder
from connector.pipeline import PollResult
from connector.store.db import Store
from connector.store.decisions import DecisionStore
from tests.support.daemon import assert_outage_loses_and_repeats_nothing, daemon_polls, decision_counts
from tests.support.fakes import KeywordClassifier
from tests.support.otobo_standin import OtoboStandin

SYSTEM = "otobo"
PASSWORD = "e2e-secret"
ROUTING = {
    "queue": {"map": {"it": "Support::Hardware", "hr": "Misc", "finance": "Billing"}, "threshold": 0.5},
    "priority": {"map": {"normal": "3 normal", "high": "4 high"}, "threshold": 0.5},
}
TEXTS = [
    ("Laptop", "My laptop screen flickers"),
    ("Holiday", "I would like to book holiday in May"),
    ("Invoice", "The invoice 4711 is wrong, urgent"),
]
EXPECTED = {"Laptop": ("Support::Hardware", "3 normal"), "Holiday": ("Misc", "3 normal"), "Invoice": ("Billing", "4 high")}


@pytest.fixture
def otobo() -> Iterator[OtoboStandin]:
    with OtoboStandin(users={"helpdesk-connector": PASSWORD}) as standin:
        yield standin


def config(otobo: OtoboStandin, tmp_path: Path, *, mode: str = "apply", routing: dict[str, Any] | None = None,
           page_size: int = 4, max_tickets_per_poll: int = 500, type_: str = "otobo", poll_interval: float = 60.0,
           **connection: Any) -> AppConfig:
    (tmp_path / "otobo-password").write_text(PASSWORD, encoding="utf-8")
    conn: dict[str, Any] = {
        "base_url": otobo.base_url,
        "user_login": "helpdesk-connector",
        "password_file": str(tmp_path / "otobo-password"),
        "queues": list(otobo.queues),
        "retry_attempts": 3,
        "retry_initial_wait": 0.01,
        "retry_max_wait": 0.05,
    }
    conn.update(connection)
    return parse_config({
        "state_dir": str(tmp_path),
        "systems": {SYSTEM: {
            "type": type_,
            "connection": conn,
            "source": {"queues": ["Raw"], "states": ["new"]},
            "page_size": page_size,
            "max_tickets_per_poll": max_tickets_per_poll,
            "poll_interval": poll_interval,
            "mode": mode,
            "routing": routing or ROUTING,
        }},
    })


def create(otobo: OtoboStandin, n: int) -> list[int]:
    out = []
    for i in range(n):
        title, body = TEXTS[i % len(TEXTS)]
        out.append(otobo.add_ticket(f"{title} {i}", body))
        if i % 2:
            otobo.advance(1)
    return out


#: ``polls(cfg, store, count=1, between=None, classifier=None)``: polls of this system by one daemon
polls = functools.partial(daemon_polls, system=SYSTEM)
statuses = functools.partial(decision_counts, system=SYSTEM)
run = asyncio.run


def patches(otobo: OtoboStandin) -> list[dict[str, Any]]:
    return [r for r in otobo.requests if r["method"] == "PATCH"]


# --------------------------------------------------------------------------- modes


def test_apply_routes_every_ticket_once(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 10)
    otobo.add_ticket("Laptop elsewhere", "not ours", queue="Postmaster")
    first, second = run(polls(config(otobo, tmp_path), store, 2))
    assert first.ok and first.new == 10 and first.outcomes["applied"] == 10, first.error
    for tid in ids:
        ticket = otobo.tickets[tid]
        assert (ticket.queue, ticket.priority) == EXPECTED[ticket.title.split()[0]]
        (note,) = otobo.notes(tid)
        assert "helpdesk-connector (apply)" in note.body and note.visible == 0
    assert otobo.tickets[11].queue == "Postmaster" and otobo.notes(11) == []
    assert second.ok and second.new == 0
    assert len(patches(otobo)) == 10  # one PATCH (fields + note) per ticket, nothing on the second poll
    assert statuses(store) == {"applied": 10}
    assert DecisionStore(store, "x").get_cursor(SYSTEM) is not None
    assert len(otobo.calls("SessionCreate")) == 1


def test_znuny_flavour_routes_the_same(tmp_path: Path, store: Store) -> None:
    with OtoboStandin(product="otrs", users={"helpdesk-connector": PASSWORD}) as znuny:
        ids = create(znuny, 3)
        (result,) = run(polls(config(znuny, tmp_path, type_="znuny"), store))
        assert result.ok and result.outcomes["applied"] == 3, result.error
        assert "/otrs/nph-genericinterface.pl/Webservice/" in znuny.requests[0]["path"]
        for tid in ids:
            ticket = znuny.tickets[tid]
            assert (ticket.queue, ticket.priority) == EXPECTED[ticket.title.split()[0]]


def test_suggest_writes_only_notes_and_never_twice(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 5)
    results = run(polls(config(otobo, tmp_path, mode="suggest"), store, 3, between=lambda i: otobo.advance(60)))
    assert results[0].outcomes["suggested"] == 5 and all(r.ok for r in results)
    for tid in ids:
        ticket = otobo.tickets[tid]
        assert (ticket.queue, ticket.state, ticket.priority) == ("Raw", "new", "3 normal")
        (note,) = otobo.notes(tid)
        assert "suggest" in note.body
    assert all("Ticket" not in p["body"] for p in patches(otobo))
    assert len(patches(otobo)) == 5


def test_dry_run_writes_nothing(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 4)
    (result,) = run(polls(config(otobo, tmp_path, mode="dry-run"), store))
    assert result.outcomes["dry_run"] == 4
    assert patches(otobo) == [] and all(otobo.notes(t) == [] for t in ids)
    assert statuses(store) == {"dry_run": 4}


def test_tiny_transformer_model_routes_through_otobo(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    from tests.support.tiny_model import build_tiny_classifier

    model = build_tiny_classifier(tmp_path / "models", ["it", "hr"], ["low", "high"], versions=("tq-1", "tp-1"))
    ids = create(otobo, 3)
    routing = {"queue": {"map": {"*": "Support::Hardware"}, "threshold": 0.0},
               "priority": {"map": {"low": "2 low", "high": "4 high"}, "threshold": 0.0}}
    (result,) = run(polls(config(otobo, tmp_path, routing=routing), store, classifier=model))
    assert result.outcomes["applied"] == 3, result.error
    assert all(otobo.tickets[t].queue == "Support::Hardware" for t in ids)
    assert all(otobo.tickets[t].priority in ("2 low", "4 high") for t in ids)
    assert all("tq-1" in otobo.notes(t)[0].body for t in ids)


def test_many_tickets_over_several_pages_and_polls(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 23)
    cfg = config(otobo, tmp_path, page_size=3, max_tickets_per_poll=10, search_limit=4, get_batch_size=2)
    results = run(polls(cfg, store, 4))
    assert [r.outcomes["applied"] for r in results] == [10, 10, 3, 0], [r.error for r in results]
    assert all(len(otobo.notes(t)) == 1 for t in ids)
    assert all(otobo.tickets[t].queue != "Raw" for t in ids)


# --------------------------------------------------------------------------- people and outages


@pytest.mark.parametrize("change", [{"queue": "Junk"}, {"priority": "1 very low"}, {"state": "open"}])
def test_ticket_changed_by_a_person_in_between_is_left_alone(
    otobo: OtoboStandin, store: Store, tmp_path: Path, change: dict[str, str]
) -> None:
    ids = create(otobo, 3)
    touched = ids[1]
    done: list[bool] = []

    def person(method: str, route: str, operation: str) -> None:
        # the person acts after the daemon listed the ticket, just before it re-reads it to write
        if operation == "TicketGet" and route == f"/Ticket/{touched}" and not done:
            done.append(True)
            otobo.advance(1)
            otobo.human_update(touched, **change)

    otobo.before_request = person
    (result,) = run(polls(config(otobo, tmp_path, get_batch_size=5), store))
    assert result.outcomes["applied"] == 2 and result.outcomes["changed"] == 1, result.outcomes
    ticket = otobo.tickets[touched]
    assert all(getattr(ticket, k) == v for k, v in change.items())
    assert otobo.notes(touched) == []
    assert DecisionStore(store, "x").get(SYSTEM, str(touched)).status == "changed"


def test_tickets_moved_into_the_source_queue_later_are_routed(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    elsewhere = otobo.add_ticket("Laptop", "My laptop screen flickers", queue="Junk")
    waiting = otobo.add_ticket("Holiday", "I would like to book holiday in May", state="open")
    otobo.advance(5)
    ids = create(otobo, 3)
    cfg = config(otobo, tmp_path)

    def people(i: int) -> None:
        if i == 0:
            otobo.advance(5)
            otobo.move_into_queue(elsewhere, "Raw")  # a person moves an old ticket into the source queue
            otobo.human_update(waiting, state="new")  # and sets another back to new
            otobo.move_into_queue(ids[0], "Raw")  # and puts a routed one back: decided, not routed again

    first, second, third = run(polls(cfg, store, 3, between=people))
    assert first.outcomes["applied"] == 3
    assert second.ok and second.outcomes["applied"] == 2, second.error
    assert (otobo.tickets[elsewhere].queue, otobo.tickets[waiting].queue) == ("Support::Hardware", "Misc")
    assert otobo.tickets[ids[0]].queue == "Raw" and len(otobo.notes(ids[0])) == 1
    assert third.ok and third.new == 0
    gets = otobo.calls("TicketGet")
    assert not any(str(ids[0]) in g["path"].rsplit("/", 1)[1].split(",") for g in gets[-3:])


def test_system_down_for_a_while_then_back(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 6)
    otobo.down = True
    cfg = config(otobo, tmp_path, retry_attempts=1)
    down1, down2 = run(polls(cfg, store, 2))
    assert isinstance(down1.error, TransientError) and isinstance(down2.error, TransientError)
    assert statuses(store) == {} and DecisionStore(store, "x").get_cursor(SYSTEM) is None
    otobo.down = False
    (back,) = run(polls(cfg, store))
    assert back.ok and back.outcomes["applied"] == 6, back.error
    assert all(len(otobo.notes(t)) == 1 for t in ids)


def test_outage_in_the_middle_of_a_poll(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 8)
    seen: list[str] = []

    def outage(method: str, route: str, operation: str) -> None:
        if operation == "TicketUpdate":
            seen.append(route)
            if len(seen) == 3:
                otobo.down = True  # OTOBO goes away after the first writes

    otobo.before_request = outage
    cfg = config(otobo, tmp_path, retry_attempts=1)
    assert_outage_loses_and_repeats_nothing(otobo, polls, cfg, store, ids)
    assert all(otobo.tickets[t].queue != "Raw" for t in ids)


def test_expired_session_between_polls_is_transparent(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    create(otobo, 2)
    results = run(polls(config(otobo, tmp_path), store, 2, between=lambda i: (otobo.expire_sessions(), create(otobo, 2))))
    assert [r.outcomes["applied"] for r in results] == [2, 2], [r.error for r in results]
    assert len(otobo.calls("SessionCreate")) == 2


def test_rate_limited_poll_is_retried_transparently(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 4)
    otobo.fail_next(2, status=429, retry_after=0)
    (result,) = run(polls(config(otobo, tmp_path), store))
    assert result.ok and result.outcomes["applied"] == 4, result.error
    assert all(len(otobo.notes(t)) == 1 for t in ids)


def test_unknown_queue_in_the_mapping_fails_that_ticket_only(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 3)  # Laptop (it), Holiday (hr), Invoice (finance)
    routing = dict(ROUTING, queue={"map": {"it": "Support::Hardware", "hr": "Human Resources", "finance": "Billing"},
                                   "threshold": 0.5})
    (result,) = run(polls(config(otobo, tmp_path, routing=routing), store))
    assert result.ok and result.outcomes["applied"] == 2 and result.outcomes["failed"] == 1
    record = DecisionStore(store, "x").get(SYSTEM, str(ids[1]))
    assert record.status == "failed" and "TicketUpdate.InvalidParameter" in (record.error or "")
    assert otobo.tickets[ids[1]].queue == "Raw" and otobo.notes(ids[1]) == []


def test_missing_move_into_on_a_target_queue_fails_that_ticket_only(
    otobo: OtoboStandin, store: Store, tmp_path: Path
) -> None:
    ids = create(otobo, 3)  # Laptop -> Support::Hardware, Holiday -> Misc, Invoice -> Billing
    otobo.permissions["helpdesk-connector"] = {"Raw": {"rw"}, "Billing": {"ro"}}  # no move_into on Billing
    (result,) = run(polls(config(otobo, tmp_path), store))
    assert result.ok and result.outcomes["applied"] == 2 and result.outcomes["failed"] == 1, result.error
    record = DecisionStore(store, "x").get(SYSTEM, str(ids[2]))
    assert record.status == "failed" and "move_into" in (record.error or "") and "'Billing'" in (record.error or "")
    assert otobo.tickets[ids[2]].queue == "Raw" and otobo.notes(ids[2]) == []
    assert [otobo.tickets[t].queue for t in ids[:2]] == ["Support::Hardware", "Misc"]


def test_wrong_web_service_name_stops_polling_at_start_with_a_plain_message(
    otobo: OtoboStandin, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    create(otobo, 2)
    wrong = otobo.base_url.replace("HelpdeskConnector", "Helpdeskconnector")
    cfg = config(otobo, tmp_path, poll_interval=0.2, base_url=wrong)
    daemon = Daemon(cfg, store=store, holder=ClassifierHolder(KeywordClassifier()))

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(2.0)  # ten poll intervals
        assert not task.done()  # the daemon (and its API) stay up
        daemon.request_stop()
        await asyncio.wait_for(task, 10)

    run(scenario())
    assert len(otobo.requests) == 1  # neither retried by the transport nor polled again
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"web service 'Helpdeskconnector' not found at {wrong}" in m for m in messages), messages
    assert any("not polled any more" in m for m in messages), messages
    health = DecisionStore(store, "x").health()[SYSTEM]
    assert "not found" in (health.last_error or "")


def test_missing_rights_stop_the_poll_until_granted(otobo: OtoboStandin, store: Store, tmp_path: Path) -> None:
    ids = create(otobo, 3)
    otobo.permissions["helpdesk-connector"] = {"Raw": {"ro", "note", "priority"}}
    cfg = config(otobo, tmp_path)
    (refused,) = run(polls(cfg, store))
    assert isinstance(refused.error, AuthenticationError)
    assert statuses(store) == {} and all(otobo.tickets[t].queue == "Raw" for t in ids)
    otobo.permissions["helpdesk-connector"] = {"Raw": {"rw"}}  # the admin grants rw on the source queue
    (granted,) = run(polls(cfg, store))
    assert granted.ok and granted.outcomes["applied"] == 3, granted.error
    assert all(len(otobo.notes(t)) == 1 for t in ids)


# --------------------------------------------------------------------------- learning loop


def test_resolved_tickets_are_exported_with_final_labels_and_corrections(
    otobo: OtoboStandin, store: Store, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from connector.learning.export import Exporter
    from connector.store.tables import Correction, TrainingExample

    ids = create(otobo, 3)  # Laptop (it), Holiday (hr), Invoice (finance)
    otobo.add_ticket("Old closed", "resolved long ago", queue="Misc", state="closed successful")
    cfg = config(otobo, tmp_path)
    (routed,) = run(polls(cfg, store))
    assert routed.outcomes["applied"] == 3, routed.error
    otobo.advance(120)
    otobo.human_update(ids[0], queue="Billing", state="closed successful")  # a person corrects the routing
    otobo.human_update(ids[1], state="closed successful")
    otobo.human_update(ids[2], state="open")  # still being worked on

    stats = run(Exporter(cfg, store).export_system(SYSTEM))
    assert stats.tickets == 3 and stats.corrections == 1  # the two closed routed tickets + the old one
    with store.session() as session:
        examples = {e.ticket_id: e for e in session.scalars(select(TrainingExample))}
        corrections = list(session.scalars(select(Correction)))
    assert examples[str(ids[0])].labels["queue"] == "finance"  # Billing, mapped back to the model label
    assert examples[str(ids[1])].labels["queue"] == "hr"
    assert str(ids[2]) not in examples
    assert "laptop" in examples[str(ids[0])].text.lower()
    (correction,) = corrections
    assert (correction.ticket_id, correction.field, correction.final) == (str(ids[0]), "queue", "Billing")

    otobo.advance(120)
    otobo.human_update(ids[2], state="closed unsuccessful")
    again = run(Exporter(cfg, store).export_system(SYSTEM))
    assert again.new == 1 and again.corrections == 0


def test_one_request_per_ticket_and_a_kill_before_the_record_adds_no_second_note(
    otobo: OtoboStandin, store: Store, tmp_path: Path
) -> None:
    """Issue #11 item 2c: fields and note in ONE TicketUpdate; after a kill, reconciliation finds the note by marker."""
    ids = create(otobo, 4)
    cfg = config(otobo, tmp_path)

    async def killed_then_restarted() -> tuple[PollResult, PollResult]:
        daemon = Daemon(cfg, store=store, holder=ClassifierHolder(KeywordClassifier()))
        await daemon.setup()

        def killed(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("killed while recording the outcomes")

        daemon.pipelines[SYSTEM].decisions.finish_many = killed  # type: ignore[method-assign]
        try:
            first = await daemon.poll_system(SYSTEM, force=True)
        finally:
            await daemon.close()
        assert first is not None
        (second,) = await polls(cfg, store)
        return first, second

    first, second = run(killed_then_restarted())
    assert first.error is not None and statuses(store) == {"applied": 4}, second.error
    assert second.ok and second.reconciled == 4
    assert len(patches(otobo)) == 4  # one TicketUpdate per ticket, none on reconciliation
    for patch in patches(otobo):
        assert "Ticket" in patch["body"] and "Article" in patch["body"]  # fields and note together
        assert "[helpdesk-connector decision " in patch["body"]["Article"]["Body"]
    for tid in ids:
        (note,) = otobo.notes(tid)
        assert note.body.rstrip().endswith("]") and otobo.tickets[tid].queue != "Raw"
    record = DecisionStore(store, "x").get(SYSTEM, str(ids[0]))
    assert record.reason == "reconciled: the ticket shows the planned values and the note"
