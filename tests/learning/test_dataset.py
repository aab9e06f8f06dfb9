"""Training and held-apart sets of a retraining, from the stored examples (+ a base dataset)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from connector.learning.dataset import build_training_sets
from connector.learning.export import Exporter
from connector.learning.retrain import new_since_last_retrain, should_retrain
from connector.store.tables import TrainingExample
from tests.support.fakes import MemoryAdapter
from tests.support.learning import add_decision, learning_config, make_store, make_tickets


def test_sets_separate_held_apart_weight_corrections_merge_base_and_drop_rare_labels(tmp_path: Path) -> None:
    base = tmp_path / "base.csv"
    base.write_text(
        "text,queue,priority\n"
        "printer jam on floor 2,Hardware,normal\n"
        "new laptop needed,Hardware,low\n"
        "screen flickers,Hardware,low\n"
        "one of a kind,Facilities,normal\n",
        encoding="utf-8",
    )
    config = learning_config(tmp_path, eval_fraction=0.3, correction_weight=3, base_dataset=str(base))
    store = make_store(tmp_path)
    add_decision(store, "2", {"queue": "Hardware"})  # ticket 2 ends in HR: a correction
    asyncio.run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(make_tickets(40))).export_system("fake"))
    with store.session() as s:
        rows = s.scalars(select(TrainingExample)).all()
        held = {r.text for r in rows if r.is_eval}
        corrected = [r for r in rows if r.source == "correction"]
    sets = build_training_sets(config, store)

    assert len(sets.eval) == len(held) > 0
    assert not held & set(sets.train.texts)  # never trained on
    assert [r.ticket_id for r in corrected] == ["2"] and not corrected[0].is_eval  # (ticket 2 hashes to training)
    assert sets.train.texts.count(corrected[0].text) == 3  # correction_weight
    assert "printer jam on floor 2" in sets.train.texts  # the base dataset is trained on too
    assert sets.info["base_examples"] == 4
    # "Facilities" has a single example: left out of the queue field (not a class the model can learn)
    assert "Facilities" not in sets.train.label_counts("queue")
    assert sets.info["rare_labels_left_out"] == {"queue": ["Facilities"]}
    assert set(sets.fields) == {"queue", "priority"}


def test_new_examples_and_corrections_count_towards_the_retraining_threshold(tmp_path: Path) -> None:
    config = learning_config(tmp_path, retrain_min_new_examples=30)
    store = make_store(tmp_path)
    asyncio.run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(make_tickets(20))).export_system("fake"))
    counts = new_since_last_retrain(store)
    assert counts["corrections"] == 0 and 0 < counts["examples"] <= 20
    due, reason = should_retrain(config, store)
    assert not due and "threshold 30" in reason
    assert should_retrain(learning_config(tmp_path, retrain_min_new_examples=5), store)[0]
