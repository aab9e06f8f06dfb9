"""The routing pipeline: one poll end to end against an in-memory helpdesk, with a real tiny model."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from adapters.base import AuthenticationError, ProtocolError, Ticket, TransientError
from adapters.http import RetryPolicy
from connector.model.classifier import ClassifierHolder, TransformerClassifier
from connector.pipeline import Pipeline
from connector.store.db import Store
from connector.store.decisions import DecisionStore
from tests.support.fakes import KeywordClassifier, MemoryAdapter, fail_on, make_tickets, system_config
from tests.support.tiny_model import build_tiny_classifier

QUEUE_LABELS = ["it", "hr", "finance"]
PRIORITY_LABELS = ["low", "normal", "high"]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> TransformerClassifier:
    return build_tiny_classifier(tmp_path_factory.mktemp("models"), QUEUE_LABELS, PRIORITY_LABELS, versions=("tq-1", "tp-1"))


def make_pipeline(store: Store, adapter: MemoryAdapter, classifier, *, instance: str = "test-1", **cfg) -> Pipeline:
    return Pipeline(
        "mem",
        system_config(**cfg),
        adapter,
        DecisionStore(store, instance),
        ClassifierHolder(classifier),
        claim_timeout=60,
    )


def run(coro):
    return asyncio.run(coro)


def statuses(store: Store) -> dict[str, int]:
    return DecisionStore(store, "x").counts().get("mem", {})


# --------------------------------------------------------------------------- real tiny model


def test_poll_with_tiny_model_routes_every_ticket_once(store: Store, tiny_classifier) -> None:
    adapter = MemoryAdapter(make_tickets(23))
    cfg = dict(
        routing={
            "queue": {"map": {"*": "IT"}, "threshold": 0.0},
            "priority": {"map": {"*": "{label}"}, "threshold": 0.0},
        }
    )
    pipeline = make_pipeline(store, adapter, tiny_classifier, **cfg)
    result = run(pipeline.poll())
    assert result.ok, result.error
    assert result.new == 23
    assert result.outcomes["applied"] == 23
    assert all(adapter.updates[str(i)] == 1 for i in range(1, 24))
    assert all(t.queue == "IT" and t.priority in PRIORITY_LABELS for t in adapter.tickets.values())
    note = adapter.notes["1"][0]
    assert "model queue=tq-1,priority=tp-1" in note.text and "queue:" in note.text
    # the record holds the predictions as the model made them
    record = DecisionStore(store, "x").get("mem", "1")
    assert record is not None and record.status == "applied"
    assert record.predictions["queue"]["label"] in QUEUE_LABELS
    assert record.applied["queue"] == "IT" and record.applied["note"] is True
    assert record.model_version == "queue=tq-1,priority=tp-1"
    # a second poll decides nothing again (the tickets left the source queue; even if listed, they are decided)
    adapter2_tickets = {k: replace(v, queue="Inbox") for k, v in adapter.tickets.items()}
    adapter.tickets = adapter2_tickets
    result2 = run(pipeline.poll())
    assert result2.ok and result2.new == 0 and sum(adapter.updates.values()) == 23


def test_api_calls_per_ticket_are_minimal(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(20))
    result = run(make_pipeline(store, adapter, KeywordClassifier(), page_size=10).poll())
    assert result.outcomes["applied"] == 20
    # listing carried the bodies: one re-read and one update per ticket, plus the pages
    assert adapter.calls["get"] == 20 and adapter.calls["update"] == 20 and adapter.calls["list"] == 2


def test_bodies_fetched_when_listing_has_none(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(5), list_bodies=False)
    clf = KeywordClassifier()
    result = run(make_pipeline(store, adapter, clf).poll())
    assert result.outcomes["applied"] == 5
    assert adapter.calls["get"] == 10  # body + re-read
    assert all("printer" in t for t in clf.texts)


def test_cursor_committed_per_page_and_max_tickets_per_poll(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(25))
    pipeline = make_pipeline(store, adapter, KeywordClassifier(), page_size=10, max_tickets_per_poll=15)
    result = run(pipeline.poll())
    assert result.new == 15 and result.outcomes["applied"] == 15
    # page 0 complete -> its cursor is stored; page 1 only half done -> not committed
    assert DecisionStore(store, "x").get_cursor("mem") == "page-0"
    result = run(pipeline.poll())
    assert result.outcomes["applied"] == 10
    assert sum(adapter.updates.values()) == 25


# --------------------------------------------------------------------------- modes and thresholds


def test_suggest_mode_writes_only_a_note(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))
    result = run(make_pipeline(store, adapter, KeywordClassifier(), mode="suggest").poll())
    assert result.outcomes["suggested"] == 3
    assert all(t.queue == "Inbox" for t in adapter.tickets.values())
    assert "'IT'" in adapter.notes["1"][0].text


def test_dry_run_writes_nothing_and_records(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    adapter = MemoryAdapter(make_tickets(3))
    caplog.set_level(logging.INFO, logger="connector.pipeline")
    result = run(make_pipeline(store, adapter, KeywordClassifier(), mode="dry-run").poll())
    assert result.outcomes["dry_run"] == 3
    assert adapter.calls["update"] == 0 and adapter.calls["get"] == 0
    assert statuses(store) == {"dry_run": 3}
    lines = [r.getMessage() for r in caplog.records if "decision system=mem" in r.getMessage()]
    assert len(lines) == 3 and "action=dry_run" in lines[0] and "queue=it(0.95)" in lines[0]
    assert "printer" not in " ".join(lines)  # never the body at INFO


def test_low_confidence_leave_skips_and_fallback_routes(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))
    result = run(make_pipeline(store, adapter, KeywordClassifier(confidence=0.3)).poll())
    assert result.outcomes["skipped"] == 2 and adapter.calls["update"] == 0

    adapter = MemoryAdapter(make_tickets(2, start=10))
    cfg = dict(
        routing={
            "queue": {"map": {"it": "IT"}, "threshold": 0.5, "low_confidence": "fallback", "fallback": "Triage"},
        }
    )
    result = run(make_pipeline(store, adapter, KeywordClassifier(confidence=0.3), **cfg).poll())
    assert result.outcomes["applied"] == 2
    assert adapter.tickets["10"].queue == "Triage" and adapter.tickets["10"].priority == "normal"


# --------------------------------------------------------------------------- someone else was faster


def test_ticket_changed_by_a_human_before_the_write_is_left_alone(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))

    def human(operation: str, ticket_id: str | None) -> None:
        if operation == "get" and ticket_id == "2":
            adapter.tickets["2"] = replace(adapter.tickets["2"], priority="high")
        if operation == "get" and ticket_id == "3":
            adapter.tickets["3"] = replace(adapter.tickets["3"], state="open")

    adapter.hook = human
    result = run(make_pipeline(store, adapter, KeywordClassifier()).poll())
    assert result.outcomes == {"applied": 1, "changed": 2}
    assert adapter.updates["2"] == 0 and adapter.updates["3"] == 0
    record = DecisionStore(store, "x").get("mem", "2")
    assert record is not None and "priority changed from 'normal' to 'high'" in (record.reason or "")


# --------------------------------------------------------------------------- errors


def test_unknown_queue_at_write_time_fails_that_ticket_only(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))
    adapter.tickets["2"] = replace(adapter.tickets["2"], body="holiday request")
    cfg = dict(routing={"queue": {"map": {"it": "IT", "hr": "Personnel"}, "threshold": 0.5}})
    result = run(make_pipeline(store, adapter, KeywordClassifier(), **cfg).poll())
    assert result.ok
    assert result.outcomes == {"applied": 2, "failed": 1}
    record = DecisionStore(store, "x").get("mem", "2")
    assert record is not None and record.status == "failed"
    assert "UnknownValueError" in (record.error or "") and "Personnel" in (record.error or "")


def test_transient_error_stops_the_poll_and_nothing_is_lost(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(8))
    down = {"on": True}

    def flaky(operation: str, ticket_id: str | None) -> None:
        if down["on"] and operation == "update" and ticket_id == "3":
            raise TransientError("503 from helpdesk", retry_after=7, not_applied=True)  # as the transport marks a 503

    adapter.hook = flaky
    pipeline = make_pipeline(store, adapter, KeywordClassifier(), max_concurrent_writes=1)
    result = run(pipeline.poll())
    assert isinstance(result.error, TransientError) and result.retry_after == 7
    assert statuses(store) == {"applied": 2}  # 1 and 2; 3 released; the rest never started
    health = DecisionStore(store, "x").health()["mem"]
    assert health.consecutive_failures == 1 and "503" in (health.last_error or "")
    down["on"] = False
    result = run(pipeline.poll())
    assert result.ok and result.outcomes["applied"] == 6
    assert all(adapter.updates[str(i)] == 1 for i in range(1, 9))
    assert DecisionStore(store, "x").health()["mem"].consecutive_failures == 0


def test_authentication_error_stops_the_poll(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))

    adapter.hook = fail_on("update", AuthenticationError("PUT /tickets/1 answered HTTP 401"))
    result = run(make_pipeline(store, adapter, KeywordClassifier()).poll())
    assert isinstance(result.error, AuthenticationError)
    assert statuses(store) == {}  # nothing recorded as done; retried after the credentials are fixed


def test_listing_protocol_error_fails_the_poll(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))

    adapter.hook = fail_on("list", ProtocolError("GET /tickets answered text/html that is not JSON"))
    result = run(make_pipeline(store, adapter, KeywordClassifier()).poll())
    assert isinstance(result.error, ProtocolError)
    assert "not JSON" in (DecisionStore(store, "x").health()["mem"].last_error or "")


def test_protocol_error_reading_one_ticket_fails_that_ticket(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3), list_bodies=False)

    adapter.hook = fail_on("get", ProtocolError("GET /tickets/2 answered malformed JSON"), "2")
    result = run(make_pipeline(store, adapter, KeywordClassifier()).poll())
    assert result.ok and result.outcomes == {"applied": 2, "failed": 1}


@pytest.mark.parametrize(
    "body",
    [
        "",
        "x" * (1024 * 1024),
        b"caf\xe9 \xff\xfe printer broken".decode("utf-8", errors="surrogateescape"),
        "<html><body><p>My <b>printer</b> is broken</p><blockquote>old</blockquote></body></html>",
        None,
    ],
    ids=["empty", "1MB", "invalid-utf8", "html-only", "no-body"],
)
def test_odd_bodies_are_classified(store: Store, tiny_classifier, body) -> None:
    ticket = Ticket(id="1", subject="help", body=body, queue="Inbox", priority="normal", state="new",
                    body_is_html=body is not None and body.startswith("<html>"))
    adapter = MemoryAdapter([ticket])
    if body is None:  # the helpdesk itself has no body for it
        adapter.list_bodies = False
    cfg = dict(routing={"queue": {"map": {"*": "IT"}, "threshold": 0.0}})
    result = run(make_pipeline(store, adapter, tiny_classifier, **cfg).poll())
    assert result.ok, result.error
    assert result.outcomes == {"applied": 1}


def test_no_model_fails_the_poll_without_claims(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))
    pipeline = Pipeline("mem", system_config(), adapter, DecisionStore(store, "t"), ClassifierHolder(), claim_timeout=60)
    result = run(pipeline.poll())
    assert result.error is not None and "no model is loaded" in str(result.error)
    assert statuses(store) == {}
    assert adapter.calls["list"] == 0  # no helpdesk calls without a model


def test_database_down_fails_the_poll_and_logs_the_traceback_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy.exc import OperationalError

    adapter = MemoryAdapter(make_tickets(2))
    pipeline = make_pipeline(store, adapter, KeywordClassifier())
    original = pipeline.decisions.decided_ids

    def down(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("could not connect to server"))

    pipeline.decisions.decided_ids = down
    caplog.set_level(logging.ERROR, logger="connector.pipeline")
    for _ in range(3):
        result = run(pipeline.poll())
        assert isinstance(result.error, OperationalError)
    assert len([r for r in caplog.records if "poll failed unexpectedly" in r.getMessage()]) == 1
    assert adapter.calls["update"] == 0
    pipeline.decisions.decided_ids = original
    assert run(pipeline.poll()).outcomes == {"applied": 2}


def test_classifier_failing_on_one_text_fails_only_that_ticket(store: Store) -> None:
    class Picky(KeywordClassifier):
        def classify(self, texts):
            if any("poison" in t for t in texts):
                if len(texts) == 1:
                    raise RuntimeError("tokenizer exploded")
                raise RuntimeError("batch failed")
            return super().classify(texts)

    tickets = make_tickets(3)
    tickets[1] = replace(tickets[1], body="poison pill")
    adapter = MemoryAdapter(tickets)
    result = run(make_pipeline(store, adapter, Picky()).poll())
    assert result.ok and result.outcomes == {"applied": 2, "failed": 1}
    record = DecisionStore(store, "x").get("mem", "2")
    assert record.status == "failed" and "tokenizer exploded" in record.error


# --------------------------------------------------------------------------- the note after the fields (issue #11)

FAST_NOTE_RETRY = RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.02)


def note_pipeline(store: Store, adapter: MemoryAdapter, **cfg) -> Pipeline:
    return Pipeline("mem", system_config(max_concurrent_writes=1, **cfg), adapter, DecisionStore(store, "test-1"),
                    ClassifierHolder(KeywordClassifier()), claim_timeout=60, note_retry=FAST_NOTE_RETRY)


def test_api_calls_per_ticket_stay_minimal_with_a_separate_note_request(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(10))  # fields and note are two requests, as in Request Tracker
    assert run(note_pipeline(store, adapter).poll()).outcomes["applied"] == 10
    assert adapter.calls["get"] == 10 and adapter.calls["update"] == 10 and adapter.calls["note"] == 10
    assert adapter.calls["find_note"] == 0  # looking for notes is for reconciliation only
    one = MemoryAdapter(make_tickets(10, start=11), note_in_update=True)  # one request, as in OTOBO and Zammad
    assert run(note_pipeline(store, one).poll()).outcomes["applied"] == 10
    assert one.calls["update"] == 10 and one.calls["note"] == 0 and one.calls["find_note"] == 0
    record = DecisionStore(store, "x").get("mem", "11")
    assert one.notes["11"][0].text.endswith(f"[helpdesk-connector decision {record.id}]")


def test_unclear_note_failures_after_the_update_keep_the_claim_and_write_the_note_once(store: Store) -> None:
    """Issue #11 item 2b: a 5xx or a timeout on the note request after the fields were written."""
    adapter = MemoryAdapter(make_tickets(6))
    write_note = adapter.add_note
    failures = {"2": ["lost"], "4": ["timeout", "timeout"], "5": ["lost", "timeout"]}

    async def flaky_note(ticket_id: str, note: str, subject: str) -> None:
        plan = failures.get(ticket_id)
        if plan:
            kind = plan.pop(0)
            if kind == "lost":  # the helpdesk stored the note, but its answer never came (504 from a proxy)
                await write_note(ticket_id, note, subject)
                raise TransientError("POST /tickets/x/notes answered HTTP 504")
            raise TransientError("POST /tickets/x/notes: timed out (ReadTimeout)")
        await write_note(ticket_id, note, subject)

    adapter.add_note = flaky_note  # type: ignore[method-assign]
    result = run(note_pipeline(store, adapter).poll())
    assert result.ok, result.error
    assert result.outcomes == {"applied": 6}
    assert all(len(adapter.notes[str(i)]) == 1 for i in range(1, 7)), adapter.notes  # none missing, none twice
    assert all(adapter.tickets[str(i)].queue == "IT" for i in range(1, 7))
    assert statuses(store) == {"applied": 6}
    assert DecisionStore(store, "x").get("mem", "4").applied == {"queue": "IT", "note": True}
    assert adapter.calls["find_note"] == 4  # only after the unclear failures: 2 once, 4 twice, 5 once


def test_note_failing_for_the_whole_poll_keeps_the_claim_for_reconciliation(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(3))
    down = {"on": True}

    def flaky(operation: str, ticket_id: str | None) -> None:
        if down["on"] and operation == "note" and ticket_id == "2":
            raise TransientError("POST /tickets/2/notes answered HTTP 502")

    adapter.hook = flaky
    pipeline = note_pipeline(store, adapter)
    result = run(pipeline.poll())
    assert isinstance(result.error, TransientError)
    assert adapter.tickets["2"].queue == "IT" and "2" not in adapter.notes  # moved, its note not yet written ...
    assert DecisionStore(store, "x").get("mem", "2").status == "claimed"  # ... and the claim kept, not released
    down["on"] = False
    result = run(pipeline.poll())
    assert result.ok and result.reconciled == 1, result.error
    assert all(len(adapter.notes[str(i)]) == 1 for i in range(1, 4))
    assert statuses(store) == {"applied": 3}
    assert adapter.updates["2"] == 1  # the fields were not written again


def test_note_refused_for_good_after_the_update_is_recorded(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2))

    adapter.hook = fail_on("note", ProtocolError("POST /tickets/1/notes answered text/html that is not JSON"), "1")
    result = run(note_pipeline(store, adapter).poll())
    assert result.ok and result.outcomes == {"applied": 2}
    record = DecisionStore(store, "x").get("mem", "1")  # the moved ticket has its record, which names the failure
    assert record.status == "applied" and record.applied == {"queue": "IT", "note": False}
    assert "ProtocolError" in record.error and "note was not written" in record.reason


def test_a_timed_out_update_that_may_have_been_applied_is_reconciled_not_released(store: Store) -> None:
    adapter = MemoryAdapter(make_tickets(2), note_in_update=True)
    apply_update = adapter.update_ticket
    lost = {"1"}

    async def slow_update(ticket_id, change):
        await apply_update(ticket_id, change)
        if ticket_id in lost:  # applied, but the answer timed out
            lost.discard(ticket_id)
            raise TransientError("PATCH /tickets/1: timed out (ReadTimeout)")

    adapter.update_ticket = slow_update  # type: ignore[method-assign]
    pipeline = note_pipeline(store, adapter)
    result = run(pipeline.poll())
    assert isinstance(result.error, TransientError)
    assert DecisionStore(store, "x").get("mem", "1").status == "claimed"  # not released: the ticket may be moved
    result = run(pipeline.poll())
    assert result.ok and result.reconciled == 1
    assert statuses(store) == {"applied": 2}
    assert len(adapter.notes["1"]) == 1 and adapter.updates["1"] == 1
    assert "shows the planned values and the note" in DecisionStore(store, "x").get("mem", "1").reason


def test_decision_lines_are_logged_once_when_recorded(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Issue #11 item 5e: a line per ticket, written when its outcome is stored, not before."""
    adapter = MemoryAdapter(make_tickets(4))
    caplog.set_level(logging.INFO, logger="connector.pipeline")
    first = note_pipeline(store, adapter)

    def killed(*args, **kwargs):
        raise RuntimeError("killed while recording outcomes")

    first.decisions.finish_many = killed  # type: ignore[method-assign]
    assert run(first.poll()).error is not None
    assert [r for r in caplog.records if "decision system=mem" in r.getMessage()] == []  # nothing stored, nothing logged
    result = run(note_pipeline(store, adapter).poll())
    assert result.ok and result.reconciled == 4
    lines = [r.getMessage() for r in caplog.records if "decision system=mem" in r.getMessage()]
    assert sorted(line.split()[2] for line in lines) == ["ticket=1", "ticket=2", "ticket=3", "ticket=4"], lines
    assert all("action=applied" in line and "queue=it(0.95)" in line for line in lines)
