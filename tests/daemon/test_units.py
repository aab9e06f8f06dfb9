"""Daemon pieces without a helpdesk server: model hot swap, metrics, event-loop responsiveness, backoff."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from adapters.base import TransientError
from connector import metrics
from connector.config import parse_config
from connector.daemon import Daemon
from connector.model.classifier import ClassifierHolder
from connector.model.serving import active_versions
from connector.pipeline import PollResult
from connector.scheduler import SystemHealth
from connector.store.db import Store, utcnow
from connector.store.tables import ModelVersion
from tests.support.fakes import KeywordClassifier, MemoryAdapter, make_tickets
from tests.support.tiny_model import build_tiny_model


def config(tmp_path: Path, **system):
    sys_cfg = {
        "type": "generic_rest",
        "connection": {"base_url": "http://127.0.0.1:9/api"},
        "source": {"queues": ["Inbox"]},
        "routing": {"queue": {"map": {"*": "IT"}, "threshold": 0.0}},
        **system,
    }
    return parse_config({"state_dir": str(tmp_path), "model": {"device": "cpu"}, "systems": {"mem": sys_cfg}})


def register(store: Store, field: str, version: str, path: Path) -> None:
    with store.session() as s:
        for row in s.query(ModelVersion).filter_by(field=field, active=True):
            row.active = False
        s.add(ModelVersion(field=field, version=version, path=str(path), created_at=utcnow(), active=True,
                           metrics={}, training={}))


def test_daemon_serves_the_active_models_and_swaps_in_new_ones(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store_url)
    register(store, "queue", "q1", build_tiny_model(tmp_path / "q1", ["it", "hr"], version="q1"))
    register(store, "priority", "p1", build_tiny_model(tmp_path / "p1", ["low", "high"], version="p1", field="priority"))
    adapter = MemoryAdapter(make_tickets(3))
    daemon = Daemon(cfg, store=store, adapters={"mem": adapter})

    async def scenario() -> None:
        await daemon.setup()
        assert daemon.holder.current.version == "queue=q1,priority=p1"
        result = await daemon.poll_system("mem", force=True)
        assert result is not None and result.outcomes == {"applied": 3}
        assert 'helpdesk_connector_active_model_info{field="queue",version="q1"} 1.0' in generate_latest(
            metrics.REGISTRY).decode()
        await daemon.check_models()  # nothing changed
        assert daemon.holder.current.version == "queue=q1,priority=p1"
        register(store, "queue", "q2", build_tiny_model(tmp_path / "q2", ["it", "hr"], version="q2", seed=3))
        await daemon.check_models()
        assert daemon.holder.current.version == "queue=q2,priority=p1"
        text = generate_latest(metrics.REGISTRY).decode()
        assert 'active_model_info{field="queue",version="q2"} 1.0' in text
        assert 'version="q1"' not in text
        await daemon.close()

    asyncio.run(scenario())
    record_version = store.engine.connect().exec_driver_sql(
        "SELECT model_version FROM decisions WHERE ticket_id = '1'").scalar()
    assert record_version == "queue=q1,priority=p1"
    store.dispose()


def test_metrics_count_decisions_and_poll_errors(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    adapter = MemoryAdapter(make_tickets(2))
    daemon = Daemon(cfg, holder=ClassifierHolder(KeywordClassifier()), adapters={"mem": adapter})
    before = metrics.TICKET_DECISIONS.labels(system="mem", outcome="applied")._value.get()
    asyncio.run(daemon.run_once())
    assert metrics.TICKET_DECISIONS.labels(system="mem", outcome="applied")._value.get() == before + 2
    assert metrics.SYSTEM_UP.labels(system="mem")._value.get() == 1

    def down(operation: str, ticket_id: str | None) -> None:
        raise TransientError("connection refused")

    adapter = MemoryAdapter(make_tickets(2, start=10))
    adapter.hook = down
    errors = metrics.POLL_ERRORS.labels(system="mem", kind="transient")._value.get()
    asyncio.run(Daemon(cfg, holder=ClassifierHolder(KeywordClassifier()), adapters={"mem": adapter}).run_once())
    assert metrics.POLL_ERRORS.labels(system="mem", kind="transient")._value.get() == errors + 1
    assert metrics.SYSTEM_UP.labels(system="mem")._value.get() == 0
    text = generate_latest(metrics.REGISTRY).decode()
    for name in ("helpdesk_connector_tickets_fetched_total", "helpdesk_connector_classification_seconds_bucket",
                 "helpdesk_connector_prediction_confidence_bucket", "helpdesk_connector_corrections_total",
                 "helpdesk_connector_training_jobs_total", "helpdesk_connector_api_requests_total",
                 "helpdesk_connector_classification_batch_size_bucket"):
        assert name in text or name.replace("_total", "") in text


class SlowClassifier(KeywordClassifier):
    def classify(self, texts):
        time.sleep(1.0)  # a CPU-bound model holding its thread
        return super().classify(texts)


def test_event_loop_stays_responsive_while_the_model_runs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    daemon = Daemon(cfg, holder=ClassifierHolder(SlowClassifier()), adapters={"mem": MemoryAdapter(make_tickets(5))})
    lags: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.02)
            lags.append(time.perf_counter() - started - 0.02)

    async def scenario() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        results = await daemon.run_once()
        stop.set()
        await tick
        assert results["mem"].outcomes == {"applied": 5}

    asyncio.run(scenario())
    assert len(lags) > 30  # the ticker kept running during the 1 s of classification
    assert max(lags) < 0.25


def test_backoff_grows_honours_retry_after_and_resets() -> None:
    now = [1000.0]
    health = SystemHealth("rt", poll_interval=60, clock=lambda: now[0])
    failing = PollResult("rt", error=TransientError("down"))
    delays = [health.update(failing) for _ in range(4)]
    assert delays[0] == pytest.approx(5, rel=0.11) and delays[3] == pytest.approx(40, rel=0.11)
    assert not health.due()
    now[0] += 45  # 40 s +- 10 % jitter
    assert health.due()
    assert health.update(PollResult("rt", error=TransientError("429", retry_after=120))) >= 120
    for _ in range(10):
        health.update(failing)
    assert health.backoff() <= 300 * 1.1
    assert health.update(PollResult("rt")) is None and health.failures == 0 and health.due()


def test_model_versions_of_any_classifier() -> None:
    assert active_versions(KeywordClassifier(version="k9")) == {"queue": "k9", "priority": "k9"}
