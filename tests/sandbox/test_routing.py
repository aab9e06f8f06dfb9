"""End to end: the real pipeline routes the sample tickets in a running sandbox through the generic REST adapter
configured as in config.example.yaml, with a real (tiny) transformer model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.generic_rest import GenericRestAdapter, GenericRestSettings
from connector.config import load_config
from connector.model.classifier import ClassifierHolder, TransformerClassifier
from connector.pipeline import Pipeline
from connector.sandbox import running_sandbox
from connector.sandbox.db import sample_tickets_path
from connector.store.db import Store
from connector.store.decisions import DecisionStore
from tests.support.paths import REPO
from tests.support.tiny_model import build_tiny_classifier

QUEUES = ["Hardware", "Software", "Access", "Network", "HR", "Billing"]
PRIORITIES = ["low", "normal", "high"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> TransformerClassifier:
    return build_tiny_classifier(tmp_path_factory.mktemp("models"), QUEUES, PRIORITIES, versions=("sq-1", "sp-1"))


def test_sample_tickets_are_routed_once_through_the_example_config(tmp_path: Path, classifier) -> None:
    if not sample_tickets_path().exists():
        pytest.skip("no sample data")
    config = load_config(REPO / "config.example.yaml")
    system = config.systems["sandbox"].model_copy(update={"page_size": 25})
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    with running_sandbox(tmp_path) as sandbox:
        sandbox.db.seed_csv(sample_tickets_path(), as_new=True, limit=120)  # several pages, a fast test
        settings = config.adapter_settings("sandbox").model_copy(update={"base_url": sandbox.api})
        total = sandbox.db.count_tickets()

        async def poll_twice() -> tuple[object, object]:
            adapter = GenericRestAdapter(
                "sandbox", settings, source_queues=system.source.queues, source_states=system.source.states
            )
            pipeline = Pipeline(
                "sandbox", system, adapter, DecisionStore(store, "t1"), ClassifierHolder(classifier), claim_timeout=60
            )
            try:
                first = await pipeline.poll()
                second = await pipeline.poll()
            finally:
                await adapter.aclose()
            return first, second

        first, second = asyncio.run(poll_twice())
        assert first.ok and second.ok, (first.error, second.error)  # type: ignore[attr-defined]
        assert first.new == total and second.new == 0  # type: ignore[attr-defined]
        rows, left, _ = sandbox.db.list_tickets(queues=["Inbox"], limit=1000)
        assert left == 0, f"{left} tickets still in the Inbox"
        # every ticket: moved out of the Inbox once (version 2 = one update), exactly one internal note
        for ticket_id in (1, total // 2, total):
            ticket = sandbox.db.get_ticket(ticket_id)
            assert ticket.version == 2 and ticket.queue in [*QUEUES, "Triage"]
            notes = sandbox.db.list_notes(ticket_id)
            assert len(notes) == 1 and notes[0].internal and notes[0].subject == "Automatic routing"
    counts = DecisionStore(store, "x").counts()["sandbox"]
    assert sum(counts.values()) == total and counts.get("applied") == total, counts
    store.dispose()


def test_injected_5xx_and_timeouts_on_notes_lose_no_note_and_no_record(tmp_path: Path) -> None:
    """Issue #11 item 2b on a real HTTP helpdesk: note requests fail with 5xx and time out after the fields
    were written; every ticket still ends moved, with exactly one note and an ``applied`` record."""
    from adapters.http import RetryPolicy
    from tests.support.fakes import KeywordClassifier, system_config

    system = system_config(
        max_concurrent_writes=4,
        page_size=50,
        routing={"queue": {"map": {"it": "Hardware", "hr": "HR", "finance": "Billing"}, "threshold": 0.5},
                 "priority": {"map": {"*": "{label}"}, "threshold": 0.5}},
    )
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    with running_sandbox() as sandbox:
        for i in range(40):
            sandbox.db.create_ticket(f"printer {i}", "my printer is broken" if i % 3 else "urgent: invoice wrong")
        sandbox.faults.add(path=r"/notes$", method="POST", status=500, times=4)
        sandbox.faults.add(path=r"/notes$", method="POST", status=502, times=3)
        sandbox.faults.add(path=r"/notes$", method="POST", status=0, delay=1.5, times=2)  # the client times out
        settings = GenericRestSettings.model_validate({"base_url": sandbox.api, "timeout": 0.5, "retry_attempts": 2})

        async def poll() -> object:
            adapter = GenericRestAdapter("sandbox", settings, source_queues=["Inbox"], source_states=["new"])
            pipeline = Pipeline("sandbox", system, adapter, DecisionStore(store, "t1"),
                                ClassifierHolder(KeywordClassifier()), claim_timeout=60,
                                note_retry=RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05))
            try:
                return await pipeline.poll()
            finally:
                await adapter.aclose()

        result = asyncio.run(poll())
        assert result.ok, result.error  # type: ignore[attr-defined]
        assert not sandbox.faults  # every fault was served
        for ticket_id in range(1, 41):
            assert sandbox.db.get_ticket(ticket_id).queue != "Inbox"
            assert len(sandbox.db.list_notes(ticket_id)) == 1, ticket_id
    assert DecisionStore(store, "x").counts()["sandbox"] == {"applied": 40}
    store.dispose()
