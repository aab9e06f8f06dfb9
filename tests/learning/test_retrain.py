"""Retraining in a separate process: promotion under the registry's rule, one at a time, crash safety."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connector.config import AppConfig
from connector.learning.export import Exporter
from connector.learning.retrain import (
    JOB_KIND,
    RetrainBusy,
    active_job,
    job_result,
    retrain,
    retrain_params,
    should_retrain,
)
from connector.model.classifier import ClassifierHolder
from connector.model.registry import ModelRegistry
from connector.model.serving import ModelReloader
from connector.model.train import TrainedModel
from connector.store.db import Store
from connector.store.tables import ModelVersion, TrainingJob
from tests.support.config import make_config
from tests.support.fakes import MemoryAdapter
from tests.support.learning import learning_config, make_store, make_tickets
from tests.support.tiny_model import build_tiny_model
from tests.support.training import held_training_lock

LABELS = ["Access", "HR", "Hardware"]


def retrain_config(tmp_path: Path, *, lr: float = 1e-2, epochs: int = 5, **learning) -> AppConfig:
    base = tmp_path / "base"
    if not base.exists():
        build_tiny_model(base, ["x", "y"], version="base")
    return make_config(
        tmp_path,
        state="var",
        validated=False,
        model={"fields": ["queue"], "base_model": str(base), "device": "cpu", "max_length": 32},
        training={
            "epochs": epochs,
            "learning_rate": lr,
            "batch_size": 8,
            "max_length": 32,
            "early_stopping_patience": 0,
            "keep_versions": 2,
        },
        systems={"fake": {"type": "generic_rest", "page_size": 50}},
        learning={"enabled": True, "min_eval_examples": 5, "eval_fraction": 0.25, "training_nice": 5, **learning},
    )


def install_champion(config: AppConfig, store: Store, version: str = "champ-0") -> None:
    path = build_tiny_model(config.models_dir / "queue" / version, LABELS, version=version, field="queue", seed=3)
    ModelRegistry(store, config.models_dir).register(TrainedModel.from_dir(path), activate=True, reason="test champion")


def export(config: AppConfig, store: Store, n: int = 120) -> None:
    asyncio.run(Exporter(config, store, adapter_factory=lambda c, s: MemoryAdapter(make_tickets(n))).export_system("fake"))


def active_version(store: Store) -> str:
    with store.session() as s:
        return s.scalars(select(ModelVersion.version).where(ModelVersion.active.is_(True))).one()


@pytest.fixture
def env(tmp_path: Path):
    config = retrain_config(tmp_path)
    store = make_store(tmp_path)
    install_champion(config, store)
    export(config, store)
    yield config, store
    store.dispose()


@pytest.mark.slow
def test_better_challenger_is_promoted_and_hot_swapped_then_worse_one_is_not(env, tmp_path: Path) -> None:
    config, store = env
    holder = ClassifierHolder()
    reloader = ModelReloader(config, store, holder)
    reloader.load_initial()
    assert holder.current.version == "queue=champ-0"
    assert should_retrain(config.model_copy(update={"learning": config.learning.model_copy(update={"retrain_min_new_examples": 50})}), store)[0]

    result = retrain(config, store, trigger="manual", timeout=300)
    assert result.state == "succeeded", result.error
    field = result.metrics["fields"]["queue"]
    assert field["promoted"] is True, field
    assert field["champion"]["version"] == "champ-0"
    assert field["challenger"]["macro_f1"] > field["champion"]["macro_f1"]
    # champion and challenger were scored on the same held-apart examples, never trained on
    assert field["challenger"]["examples"] == field["champion"]["examples"] == result.metrics["eval_examples"]
    assert result.metrics["train_examples"] + result.metrics["eval_examples"] == 120
    report = Path(result.metrics["report"])
    assert "Champion vs challenger" in (report / "report.md").read_text()
    assert (report / "report.json").is_file()
    new_version = result.metrics["version"]
    assert active_version(store) == new_version
    assert reloader.check() is True
    assert holder.current.version == f"queue={new_version}"
    with store.session() as s:
        job = s.get(TrainingJob, result.job_id)
        assert (job.state, job.trigger, job.params["kind"]) == ("succeeded", "manual", "retrain")
        assert job.started_at is not None and job.finished_at is not None
    # nothing new arrived since: the schedule would not retrain
    assert should_retrain(config, store)[0] is False

    # a challenger that learns nothing (learning rate ~0) is worse: not promoted, the champion stays
    bad = retrain_config(tmp_path, lr=1e-9, epochs=1)
    result = retrain(bad, store, trigger="manual", timeout=300)
    assert result.state == "succeeded", result.error
    field = result.metrics["fields"]["queue"]
    assert field["promoted"] is False
    assert "lower than the active" in field["reason"]
    assert active_version(store) == new_version
    assert reloader.check() is False
    # keep_versions=2: the oldest (champ-0) was pruned, the active one and the rejected one remain
    versions = {v.version for v in ModelRegistry(store, config.models_dir).list("queue")}
    assert versions == {new_version, result.metrics["version"]}


def _wait_training(store: Store, job_id: int, alive: Any) -> int:
    """Wait until the job's worker trains (past 0.05: the data is prepared, the first batches ran); its pid."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with store.session() as s:
            job = s.get(TrainingJob, job_id)
            if job.state == "running" and job.progress > 0.05:
                return job.pid
        assert alive() is True, alive()
        time.sleep(0.2)
    pytest.fail("training did not start")


@pytest.mark.slow
def test_killed_training_leaves_the_active_model_and_the_next_run_works(env) -> None:
    config, store = env
    slow = config.model_copy(update={"training": config.training.model_copy(update={"epochs": 100})})
    from connector.training.runner import TrainingRunner

    started = TrainingRunner(slow, store).start(JOB_KIND, trigger="manual", params=retrain_params(slow, force=False, base_dataset=None))
    job_id, proc, directory = started.job_id, started.proc, started.directory
    try:
        _wait_training(store, job_id, lambda: proc.poll() is None or (directory / "worker.log").read_text())
        # the worker runs with a lower priority than this process
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) >= min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
        # a second retraining is refused while this one runs
        with pytest.raises(RetrainBusy):
            retrain(config, store)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)

    assert active_version(store) == "champ-0"
    assert active_job(store) is None  # the dead job is settled
    assert job_result(store, job_id).state == "failed"
    assert "interrupted" in job_result(store, job_id).error
    # nothing half-written was registered; the lock was released with the process
    assert {v.version for v in ModelRegistry(store, config.models_dir).list("queue")} == {"champ-0"}
    result = retrain(config, store, timeout=300)
    assert result.state == "succeeded", result.error


def test_too_small_evaluation_set_trains_nothing(tmp_path: Path) -> None:
    config = retrain_config(tmp_path, min_eval_examples=500)
    store = make_store(tmp_path)
    install_champion(config, store)
    export(config, store, n=40)
    result = retrain(config, store, timeout=300)
    assert result.state == "failed"
    assert "held-apart evaluation set is too small" in result.error
    assert active_version(store) == "champ-0"


@pytest.mark.slow
def test_daemon_shutdown_cancels_a_running_training(env) -> None:
    config, store = env
    calls = {"n": 0}

    def stop_after_start() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3  # the daemon's stop flag rises while the worker runs

    result = retrain(config, store, should_stop=stop_after_start, timeout=300)
    assert result.state == "cancelled"
    assert active_version(store) == "champ-0"
    assert active_job(store) is None


@pytest.mark.slow
def test_retrain_command(env, tmp_path: Path) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from connector.cli import app

    config, store = env
    data = config.model_dump(mode="json", exclude={"systems", "api", "source_path"})
    data["store"] = {"url": store.url}
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["retrain", "--config", str(cfg_file)])
    assert result.exit_code == 0, result.output
    assert "promoted" in result.output and "report:" in result.output
    # nothing better to learn from the same data: --force promotes the new challenger anyway
    forced = CliRunner().invoke(app, ["retrain", "--force", "--json", "--config", str(cfg_file)])
    assert forced.exit_code == 0, forced.output
    out = json.loads(forced.output[forced.output.index("{"):])
    assert out["state"] == "succeeded" and out["fields"]["queue"]["promoted"] is True
    assert out["fields"]["queue"]["reason"] == "forced"
    assert active_version(store) == out["version"]


def test_status_reports_a_killed_training_as_failed_not_running(tmp_path: Path) -> None:
    import subprocess
    import sys

    from connector.learning.status import learning_status, render_text
    config = learning_config(tmp_path)
    store = make_store(tmp_path)
    from connector.training.jobs import create_job

    killed = create_job(store, kind=JOB_KIND, trigger="manual", params=retrain_params(config, force=False, base_dataset=None))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a worker killed with -9: its pid is gone, its row still says running
    with store.session() as s:
        job = s.get(TrainingJob, killed)
        job.state, job.pid = "running", gone.pid

    status = learning_status(config, store)
    (reported,) = status["retraining_jobs"]
    assert reported["id"] == killed and reported["state"] == "failed"
    assert "interrupted" in reported["error"]
    assert "running" not in render_text(status)

    # a job whose worker lives is still reported as running
    with store.session() as s:
        created = s.get(TrainingJob, killed).created_at
        live = TrainingJob(state="running", trigger="manual", params={"kind": "retrain"}, pid=os.getpid(), created_at=created)
        s.add(live)
        s.flush()
        live_id = live.id
    jobs = learning_status(config, store)["retraining_jobs"]
    assert [(j["id"], j["state"]) for j in jobs] == [(live_id, "running"), (killed, "failed")]
    store.dispose()


def test_busy_training_lock_fails_the_retraining_like_an_api_job(env) -> None:
    """One outcome for a busy lock: the job ends ``failed`` (the learning loop said ``cancelled`` before)."""
    config, store = env
    with held_training_lock(config.state_dir):
        result = retrain(config, store, timeout=120)
    assert result.state == "failed" and "training lock" in (result.error or "")
    assert active_version(store) == "champ-0"


@pytest.mark.slow
def test_retraining_worker_dies_with_its_killed_starter(env) -> None:
    """The worker's life is tied to its starter for every kind: a retraining started by a killed daemon stops."""
    import subprocess
    import sys

    from connector.training.jobs import JobSpec, create_job, job_dir

    config, store = env
    slow = config.model_copy(update={"training": config.training.model_copy(update={"epochs": 100})})
    job_id = create_job(store, kind=JOB_KIND, trigger="schedule", params=retrain_params(slow, force=False, base_dataset=None))
    spec_path = job_dir(slow, job_id) / "spec.json"
    JobSpec.build(slow, job_id, JOB_KIND, retrain_params(slow, force=False, base_dataset=None), store_url=store.url).write(spec_path)
    # a stand-in daemon: names itself the starter, starts the worker, then is killed with -9
    starter = subprocess.Popen(
        [sys.executable, "-c", "import json, os, subprocess, sys, time; p = sys.argv[1]; s = json.load(open(p)); "
         "s['parent_pid'] = os.getpid(); json.dump(s, open(p, 'w')); "
         "subprocess.Popen([sys.executable, '-m', 'connector.training.worker', p], start_new_session=True); time.sleep(300)",
         str(spec_path)],
    )
    try:
        worker = _wait_training(store, job_id, lambda: starter.poll() is None)
        starter.kill()
    finally:
        starter.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and job_result(store, job_id).state == "running":
        time.sleep(0.2)
    result = job_result(store, job_id)
    assert result.state == "failed" and "the process that started it" in (result.error or ""), result
    assert active_version(store) == "champ-0"
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(worker, 0)
            time.sleep(0.2)
