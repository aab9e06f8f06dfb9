"""The ``train``, ``evaluate`` and ``models`` commands, end to end with a tiny base model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.cli import app
from tests.support.paths import SAMPLE_TICKETS
from tests.support.tiny_model import build_tiny_model



@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "config.yaml"
    config.write_text(f"state_dir: {root / 'var'}\n", encoding="utf-8")
    # a small slice of the sample data keeps the runs quick
    with SAMPLE_TICKETS.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:150]
    data = root / "tickets.csv"
    with data.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["subject", "body", "queue", "priority"])
        writer.writeheader()
        writer.writerows(rows)
    base = build_tiny_model(root / "base", ["x", "y"])
    return {"root": root, "config": config, "data": data, "base": base}


def run(*args: str) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def train_args(env: dict[str, Path], *extra: str) -> list[str]:
    return [
        "train", str(env["data"]), "--config", str(env["config"]), "--base-model", str(env["base"]),
        "--epochs", "1", "--max-length", "32", "--batch-size", "16", "--json", *extra,
    ]


@pytest.mark.slow
def test_train_list_activate_rollback_evaluate(env: dict[str, Path]) -> None:
    first = run(*train_args(env))
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    v1 = out["version"]
    assert set(out["fields"]) == {"queue", "priority"}
    for field in ("queue", "priority"):
        info = out["fields"][field]
        assert info["transformer"]["macro_f1"] is not None
        assert info["linear_baseline"]["macro_f1"] is not None  # the baseline is always reported
        assert out["activation"][field]["promoted"] is True
        assert Path(info["path"], "model.safetensors").is_file()

    listed = json.loads(run("models", "list", "--config", env["config"], "--json").stdout)["models"]
    assert {(m["field"], m["version"], m["active"]) for m in listed} == {("queue", v1, True), ("priority", v1, True)}

    import time

    time.sleep(1.1)  # versions are per second
    second = run(*train_args(env, "--no-activate"))
    assert second.exit_code == 0, second.output
    v2 = json.loads(second.stdout)["version"]
    assert v2 != v1
    listed = json.loads(run("models", "list", "--config", env["config"], "--json").stdout)["models"]
    assert {m["version"] for m in listed if m["active"]} == {v1}

    activated = run("models", "activate", v2, "--config", env["config"])
    assert activated.exit_code == 0, activated.output
    assert f"queue: {v2} is active" in activated.stdout
    listed = json.loads(run("models", "list", "--config", env["config"], "--json").stdout)["models"]
    assert {m["version"] for m in listed if m["active"]} == {v2}

    rolled = run("models", "rollback", "--config", env["config"], "--field", "queue")
    assert rolled.exit_code == 0, rolled.output
    assert f"queue: rolled back to {v1}" in rolled.stdout
    listed = json.loads(run("models", "list", "--config", env["config"], "--json").stdout)["models"]
    assert {(m["field"], m["version"]) for m in listed if m["active"]} == {("queue", v1), ("priority", v2)}

    history = run("models", "history", "--config", env["config"], "--json")
    assert len(json.loads(history.stdout)["activations"]) == 5

    model_dir = env["root"] / "var" / "models" / "queue" / v1
    report = env["root"] / "report"
    ev = run("evaluate", model_dir, env["data"], "--config", env["config"], "--json", "--report", report)
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)
    q = result["fields"]["queue"]
    assert q["examples"] == 150 and q["model_version"] == v1
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "coverage_curve", "recommended_threshold"} <= set(q)
    for name in ("report.json", "report.md", "queue_confusion.png", "queue_coverage.png"):
        assert (report / name).is_file(), name
    assert (report / "queue_confusion.png").read_bytes()[:4] == b"\x89PNG"

    human = run("evaluate", model_dir, env["data"], "--config", env["config"], "--report", env["root"] / "r2")
    assert human.exit_code == 0 and "macro-F1" in human.stdout


def test_evaluate_missing_and_corrupt_model_dirs(env: dict[str, Path]) -> None:
    missing = run("evaluate", env["root"] / "nope", env["data"], "--config", env["config"])
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr

    broken = build_tiny_model(env["root"] / "broken", ["Hardware", "Access"], field="queue")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result = run("evaluate", broken, env["data"], "--config", env["config"])
    assert result.exit_code == 2
    assert "cannot load model" in result.stderr


def test_train_rejects_bad_data_with_line_and_column(env: dict[str, Path]) -> None:
    bad = env["root"] / "bad.csv"
    bad.write_text("subject,body,queue\na,b,Hardware\nc,d,Hardware\ne,f,Access\n", encoding="utf-8")
    result = run("train", bad, "--config", env["config"], "--base-model", env["base"])
    assert result.exit_code == 2
    assert "line 4, column 'queue'" in result.stderr and "'Access' has 1 example" in result.stderr
    missing = run("train", bad, "--config", env["config"], "--label-column", "priority")
    assert missing.exit_code == 2 and "missing column 'priority'" in missing.stderr


def test_models_commands_on_an_empty_registry(env: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path / 'var'}\n", encoding="utf-8")
    assert "no model registered" in run("models", "list", "--config", config).stdout
    rolled = run("models", "rollback", "--config", config)
    assert rolled.exit_code == 2 and "no active model" in rolled.stderr
    act = run("models", "activate", "v1", "--config", config)
    assert act.exit_code == 2 and "no registered model version" in act.stderr
