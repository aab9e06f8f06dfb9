"""End to end with the sandbox helpdesk: route, agents correct and resolve, export, retrain, hot swap, status, metrics."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from connector import metrics
from connector.cli import app
from connector.config import parse_config
from connector.daemon import Daemon
from connector.learning.cycle import run_cycle
from connector.learning.status import learning_status
from connector.model.registry import ModelRegistry
from connector.model.train import TrainedModel
from connector.sandbox import running_sandbox
from connector.store.db import Store
from connector.store.tables import Correction, Decision, TrainingExample
from tests.support.paths import REPO
from tests.support.tiny_model import build_tiny_model


# texts made of words the tiny model's vocabulary knows, one topic per queue
TOPICS = {
    "Hardware": ("printer broken", "my printer and laptop screen are broken"),
    "Access": ("password login", "vpn login account access password not working"),
    "HR": ("holiday salary", "salary holiday contract hr question"),
}


def _truth(i: int) -> tuple[str, str, str, str]:
    queue = list(TOPICS)[i % 3]
    subject, body = TOPICS[queue]
    urgent = i % 4 == 0
    priority = "high" if urgent else "normal"
    body = f"{'urgent ' if urgent else ''}{body} please help, ticket {i}, mail me at user{i}@example.com"
    return subject, body, queue, priority


def _config(tmp_path: Path, sandbox_api: str, store_url: str):
    data = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))
    base = build_tiny_model(tmp_path / "base", ["x", "y"], version="base")
    data["state_dir"] = str(tmp_path / "var")
    data["store"] = {"url": store_url}
    data["model"].update({"base_model": str(base), "device": "cpu", "max_length": 32, "dir": str(tmp_path / "models")})
    data["training"].update({"epochs": 5, "learning_rate": 1e-2, "batch_size": 8, "max_length": 32, "early_stopping_patience": 0})
    data["learning"] = {
        "enabled": True,
        "retrain_min_new_examples": 20,
        "min_eval_examples": 4,
        "eval_fraction": 0.25,
        "training_nice": 5,
        "privacy": {"anonymize": True, "retention_days": 365},
    }
    data.pop("api", None)
    system = data["systems"]["sandbox"]
    system["connection"]["base_url"] = sandbox_api
    system["routing"]["queue"]["threshold"] = 0.0
    system["routing"]["priority"]["threshold"] = 0.0
    data["systems"] = {"sandbox": system}
    return parse_config(data, "test")


def _counter(system: str, field: str) -> float:
    value = metrics.REGISTRY.get_sample_value("helpdesk_connector_corrections_total", {"system": system, "field": field})
    return value or 0.0


def _install_champions(config, store: Store) -> None:
    """Random tiny queue and priority models (version champ-0), active."""
    registry = ModelRegistry(store, config.models_dir)
    for field, labels in (("queue", list(TOPICS)), ("priority", ["high", "normal"])):
        path = build_tiny_model(config.models_dir / field / "champ-0", labels, version="champ-0", field=field, seed=7)
        registry.register(TrainedModel.from_dir(path), activate=True)


async def _route_correct_retrain(config, store: Store, sandbox, n: int) -> tuple[str, str, object]:
    """The daemon routes ``n`` tickets, the agents correct and resolve them, a learning cycle runs, the daemon
    picks up the promoted model and routes 6 more; (old model version, new model version, the cycle)."""
    daemon = Daemon(config, store=store)
    await daemon.setup()
    try:
        first = await daemon.poll_system("sandbox", force=True)
        assert first is not None and first.ok, first
        old_version = daemon.holder.current.version
        # the agents: every ticket ends in its true queue and priority, then is resolved;
        # wherever the (random) champion wrote something else, that is a correction
        for ticket_id in range(1, n + 1):
            _s, _b, queue, priority = _truth(ticket_id - 1)
            sandbox.db.resolve_ticket(ticket_id, queue=queue, priority=priority)
        cycle = await run_cycle(config, store)
        await daemon.check_models()
        new_version = daemon.holder.current.version
        # the running daemon routes new tickets with the promoted model
        for i in range(n, n + 6):
            subject, body, _q, _p = _truth(i)
            sandbox.db.create_ticket(subject, body)
        second = await daemon.poll_system("sandbox", force=True)
        assert second is not None and second.ok and second.new == 6, second
        return old_version, new_version, cycle
    finally:
        await daemon.close()


def _assert_exported_and_corrected(store: Store, cycle, n: int, before: tuple[float, float]) -> tuple[set, dict]:
    """Export: one anonymised example per resolved ticket; corrections: exactly the fields where the daemon's
    write differs from the final value, counted.  Returns the expected corrections and the decisions."""
    assert [e.tickets for e in cycle.exports] == [n]
    with store.session() as s:
        examples = s.scalars(select(TrainingExample)).all()
        corrections = s.scalars(select(Correction)).all()
        decisions = {d.ticket_id: d for d in s.scalars(select(Decision))}
    assert len(examples) == n
    assert all("@example.com" not in e.text and "[EMAIL]" in e.text for e in examples)
    expected = set()
    for i in range(n):
        d = decisions[str(i + 1)]
        _s, _b, queue, priority = _truth(i)
        assert d.status == "applied"
        if d.applied.get("queue") != queue:
            expected.add((str(i + 1), "queue", d.applied["queue"], queue))
        if d.applied.get("priority") != priority:
            expected.add((str(i + 1), "priority", d.applied["priority"], priority))
    assert expected, "the random champion should have been corrected somewhere"
    assert {(c.ticket_id, c.field, c.predicted, c.final) for c in corrections} == expected
    assert _counter("sandbox", "queue") - before[0] == sum(1 for e in expected if e[1] == "queue")
    assert _counter("sandbox", "priority") - before[1] == sum(1 for e in expected if e[1] == "priority")
    return expected, decisions


def _assert_gauges(expected: set, decisions: dict, n: int) -> None:
    """The override-rate gauge, as set after the export: corrected / written, per written queue value."""
    for value in {e[2] for e in expected if e[1] == "queue"}:
        written = sum(1 for i in range(n) if decisions[str(i + 1)].applied.get("queue") == value)
        corrected = sum(1 for e in expected if e[1] == "queue" and e[2] == value)
        gauge = metrics.REGISTRY.get_sample_value(
            "helpdesk_connector_override_rate", {"system": "sandbox", "field": "queue", "value": value}
        )
        assert gauge == pytest.approx(corrected / written)
    assert metrics.REGISTRY.get_sample_value("helpdesk_connector_automatic_share", {"system": "sandbox"}) == 1.0


def _assert_retrained_and_swapped(store: Store, cycle, old_version: str, new_version: str, n: int):
    """Retraining: triggered by the export, promoted under the registry's rule, swapped into the daemon."""
    retrained = cycle.retrained
    assert retrained is not None and retrained.state == "succeeded", retrained
    assert retrained.promoted["queue"] is True, retrained.metrics["fields"]["queue"]
    assert old_version.startswith("queue=champ-0")
    assert f"queue={retrained.metrics['version']}" in new_version
    with store.session() as s:
        newest = [d for d in s.scalars(select(Decision)) if int(d.ticket_id) > n]
    assert len(newest) == 6 and all(d.model_version == new_version for d in newest)
    return retrained


def _assert_status(config, store: Store, expected: set, retrained, n: int) -> int:
    """Status: override rates, automatic share, active model and drift; the number of corrected queues."""
    status = learning_status(config, store)
    queue_c = status["corrections"]["sandbox"]["queue"]
    assert queue_c["corrected"] == sum(1 for e in expected if e[1] == "queue")
    assert queue_c["applied"] == n + 6  # the 6 routed by the new model count too (not corrected yet)
    assert status["automatic_share"]["sandbox"]["share"] == 1.0
    assert status["active_models"]["queue"]["version"] == retrained.metrics["version"]
    assert status["drift"]["queue"]["compared_with"] == "training data"
    assert status["drift"]["queue"]["total_variation"] is not None
    assert status["retraining_jobs"][0]["state"] == "succeeded"
    return queue_c["corrected"]


def _assert_cli_status(tmp_path: Path, config, store: Store, corrected: int) -> None:
    """The CLI's status shows the learning loop too."""
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(config.state_dir),
                "store": {"url": store.url},
                "model": {"dir": str(config.models_dir)},
                "learning": {"enabled": True},
            }
        )
    )
    result = CliRunner().invoke(app, ["status", "--learning", "--config", str(cfg_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["corrections"]["sandbox"]["queue"]["corrected"] == corrected
    text = CliRunner().invoke(app, ["status", "--learning", "--config", str(cfg_file)])
    assert text.exit_code == 0 and "routed automatically" in text.output and "drift" in text.output, text.output


@pytest.mark.slow
def test_learning_loop_end_to_end(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    n = 72
    with running_sandbox(tmp_path / "sandbox") as sandbox:
        config = _config(tmp_path, sandbox.api, store.url)
        _install_champions(config, store)
        for i in range(n):
            subject, body, _q, _p = _truth(i)
            sandbox.db.create_ticket(subject, body)
        before = _counter("sandbox", "queue"), _counter("sandbox", "priority")
        old_version, new_version, cycle = asyncio.run(_route_correct_retrain(config, store, sandbox, n))

    expected, decisions = _assert_exported_and_corrected(store, cycle, n, before)
    _assert_gauges(expected, decisions, n)
    retrained = _assert_retrained_and_swapped(store, cycle, old_version, new_version, n)
    corrected = _assert_status(config, store, expected, retrained, n)
    _assert_cli_status(tmp_path, config, store, corrected)
    store.dispose()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_export_command_writes_resolved_tickets_to_a_file(tmp_path: Path, suffix: str) -> None:
    with running_sandbox(tmp_path / "sandbox") as sandbox:
        for i in range(7):
            subject, body, queue, priority = _truth(i)
            row = sandbox.db.create_ticket(subject, body)
            if i < 5:
                sandbox.db.resolve_ticket(row.id, queue=queue, priority=priority)
        data = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))
        data["systems"]["sandbox"]["connection"]["base_url"] = sandbox.api
        data["state_dir"] = str(tmp_path / "var")
        cfg_file = tmp_path / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(data))
        out = tmp_path / f"examples{suffix}"
        result = CliRunner().invoke(app, ["export", "--config", str(cfg_file), "--system", "sandbox", "--output", str(out)])
        assert result.exit_code == 0, result.output
        # --store runs the scheduled export by hand; a second run finds nothing new
        runs = [
            CliRunner().invoke(app, ["export", "--config", str(cfg_file), "--store", "--json"]) for _ in range(2)
        ]
    assert [r.exit_code for r in runs] == [0, 0], runs[0].output + runs[1].output
    first, second = (json.loads(r.output)["exports"][0] for r in runs)
    assert (first["tickets"], first["new"]) == (5, 5)
    # (the 10-minute overlap lists them again: replaced by identical examples, nothing new or changed)
    assert (second["new"], second["updated"]) == (0, 0)
    bad = CliRunner().invoke(app, ["export", "--config", str(cfg_file), "--output", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and ".csv or .jsonl" in bad.output
    text = out.read_text(encoding="utf-8")
    assert "@example.com" not in text and "[EMAIL]" in text
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 5
    assert {r["queue"] for r in rows} == {"Hardware", "Access", "HR"}
    assert {r["priority"] for r in rows} == {"high", "normal"}
    # the file loads as training data
    from connector.model.data import load_labeled_file

    loaded = load_labeled_file(out, validate=False)
    assert len(loaded) == 5 and set(loaded.fields) == {"queue", "priority"}


def test_tickets_seeded_from_a_text_column_export_their_text_once(tmp_path: Path) -> None:
    texts = {
        "Hardware": "The printer on floor three prints blank pages since the toner was replaced yesterday morning",
        "Access": "VPN login fails\nSince Monday the VPN rejects my password although the web login accepts it.",
        "HR": "Short question",
    }
    seed = tmp_path / "seed.csv"
    with seed.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "queue"])
        writer.writerows([text, queue] for queue, text in texts.items())
    with running_sandbox(tmp_path / "sandbox", seed=seed, seed_as_new=True) as sandbox:
        for ticket in sandbox.db.list_tickets(limit=10)[0]:
            sandbox.db.resolve_ticket(ticket.id, queue=next(q for q, t in texts.items() if t == ticket.body))
        data = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))
        data["systems"]["sandbox"]["connection"]["base_url"] = sandbox.api
        data["state_dir"] = str(tmp_path / "var")
        cfg_file = tmp_path / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(data))
        out = tmp_path / "examples.jsonl"
        result = CliRunner().invoke(app, ["export", "--config", str(cfg_file), "--system", "sandbox", "--output", str(out)])
        assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # the example is the original text (lines folded into one), not its first words and then the text again
    assert {r["queue"]: r["text"] for r in rows} == {queue: " ".join(text.split()) for queue, text in texts.items()}
