"""The learning loop against a real Request Tracker 5: routed tickets, corrected and resolved by agents in RT,
are exported (with the corrections) and feed a retraining that is promoted and registered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.config import parse_config
from connector.daemon import Daemon
from connector.learning.cycle import run_cycle
from connector.model.classifier import ClassifierHolder
from connector.model.registry import ModelRegistry
from connector.model.train import TrainedModel
from connector.store.db import Store
from connector.store.tables import Correction, TrainingExample
from tests.support.rt_server import RtServer
from tests.support.rt_support import MarkerClassifier, system_section
from tests.support.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration

# words the tiny model's vocabulary knows; the marker tells the MarkerClassifier what to "predict"
TEXTS = {
    "network": ("VPN down", "vpn network access login not working"),
    "hardware": ("Printer", "printer laptop screen broken"),
    "software": ("Mail", "email account error slow"),
}


def test_resolved_rt_tickets_feed_a_retraining(rt: RtServer, source_queue: str, tmp_path: Path) -> None:
    base = build_tiny_model(tmp_path / "base", ["x", "y"], version="base")
    config = parse_config(
        {
            "state_dir": str(tmp_path),
            "store": {"url": f"sqlite:///{tmp_path / 'connector.db'}"},
            "daemon": {"instance_id": "rt-learning"},
            "model": {"fields": ["queue", "priority"], "base_model": str(base), "device": "cpu", "max_length": 32},
            "training": {"epochs": 5, "learning_rate": 1e-2, "batch_size": 8, "max_length": 32, "early_stopping_patience": 0},
            "learning": {"enabled": True, "retrain_min_new_examples": 10, "min_eval_examples": 2, "eval_fraction": 0.25},
            "systems": {"rt": system_section(rt, source_queue)},
        },
        "<test>",
    )
    store = Store(config.store_url)
    try:
        champion = build_tiny_model(config.models_dir / "queue" / "champ-0", list(TEXTS), version="champ-0", field="queue", seed=5)
        ModelRegistry(store, config.models_dir).register(TrainedModel.from_dir(champion), activate=True)
        # the export reaches back to now, to the second: tickets other tests of this RT resolved before stay out
        started = datetime.now(UTC).replace(microsecond=0)
        ids: dict[str, str] = {}
        for i in range(24):
            queue = list(TEXTS)[i % 3]
            subject, body = TEXTS[queue]
            # every sixth ticket is routed to the wrong queue by the "model", then corrected by an agent
            marker = "q:software" if i % 6 == 0 and queue != "software" else f"q:{queue}"
            ids[rt.create_ticket(source_queue, f"{subject} {i}", f"{body} {marker} p:normal")] = queue
        daemon = Daemon(config, store=store, holder=ClassifierHolder(MarkerClassifier()))
        asyncio.run(daemon.run_once())
        for tid, queue in ids.items():
            fields = {"Status": "resolved"}
            if rt.ticket(tid)["queue"] != queue.capitalize():
                fields["Queue"] = queue.capitalize()
            rt.update(tid, **fields)

        # the scheduled cycle, with the first export reaching back to the start of the test
        with store.session() as s:
            from connector.store.tables import PollState

            state = s.get(PollState, "rt")
            state.export_since = started
        cycle = asyncio.run(run_cycle(config, store))
        with store.session() as s:
            examples = s.scalars(select(TrainingExample).where(TrainingExample.system == "rt")).all()
            corrections = s.scalars(select(Correction)).all()
        assert len(examples) == len(ids)
        assert {e.labels["queue"] for e in examples} == set(TEXTS)
        wrong = {tid for tid in ids if ids[tid] != "software" and list(ids).index(tid) % 6 == 0}
        assert {c.ticket_id for c in corrections if c.field == "queue"} == wrong
        assert all(c.predicted == "Software" for c in corrections if c.field == "queue")
        result = cycle.retrained
        assert result is not None and result.state == "succeeded", result
        assert result.metrics["train_examples"] > 0 and result.metrics["eval_examples"] > 0
        assert result.promoted["queue"] is True
        assert ModelRegistry(store, config.models_dir).active()["queue"].version == result.metrics["version"]
    finally:
        store.dispose()
