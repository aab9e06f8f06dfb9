"""Training through the API: the classic calls end to end, one job at a time, cancel, failures, lower priority."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.api.jobs import JobSpec, job_dir
from connector.store.db import Store
from connector.store.tables import TrainingJob
from tests.support.api import QUEUES, install_tiny_models, live_api, api_config, sample_csv
from tests.support.processes import wait_gone
from tests.support.tiny_model import build_tiny_model
from tests.support.training import held_training_lock


def _config(tmp: Path) -> Any:
    config = api_config(tmp)
    # a tiny base model, so training takes seconds (the classic call names no base model)
    base = build_tiny_model(tmp / "base", QUEUES, version="base", field="queue")
    config.model.base_model = base
    return config


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    """A configuration with a tiny base model, its store, and tiny queue and priority models active."""
    config = _config(tmp_path)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    yield config, store
    store.dispose()


def _poll(client: httpx.Client, job_id: int, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen_states = set()
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/train/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        seen_states.add(job["state"])
        assert 0.0 <= job["progress"] <= 1.0
        if job["state"] in ("succeeded", "failed", "cancelled"):
            job["seen_states"] = seen_states
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.mark.slow
def test_classic_calls_end_to_end(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.store_url)
    install_tiny_models(config, store, version="tiny-1")
    with live_api(config, store) as (client, _app):
        # 1. the CSV body posted raw
        upload = client.post("/api/v1/train-data", content=sample_csv(), headers={"Content-Type": "text/csv"})
        assert upload.status_code == 201, upload.text
        dataset_id = upload.json()["id"]

        # 2. train asynchronously, no body: 202 with a job id at once
        from connector.metrics import TRAINING_JOBS

        succeeded_before = TRAINING_JOBS.labels(state="succeeded")._value.get()
        started = time.monotonic()
        response = client.post("/api/v1/train", headers={"Prefer": "respond-async"})
        assert time.monotonic() - started < 5
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.headers["location"] == f"/api/v1/train/{job_id}"
        assert response.headers["preference-applied"] == "respond-async"
        # one at a time
        again = client.post("/api/v1/train")
        assert again.status_code == 409
        assert again.json()["error"]["job_id"] == job_id

        job = _poll(client, job_id)
        assert job["state"] == "succeeded", job
        assert job["progress"] == 1.0 and job["error"] is None
        assert job["dataset_id"] == dataset_id
        assert job["params"]["fields"] == ["queue", "priority"]
        assert job["params"]["base_model"] == str(config.model.base_model)
        version = job["metrics"]["version"]
        assert set(job["metrics"]["fields"]) == {"queue", "priority"}
        assert set(job["metrics"]["activation"]) == {"queue", "priority"}
        assert job["started_at"] and job["finished_at"]
        # counted in this (the server's) process's training_jobs_total once the job settled
        deadline = time.monotonic() + 10
        while TRAINING_JOBS.labels(state="succeeded")._value.get() == succeeded_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert TRAINING_JOBS.labels(state="succeeded")._value.get() == succeeded_before + 1

        # 3. the new model activated and used by classify
        response = client.post(f"/api/v1/models/{version}/activate")
        assert response.status_code == 200, response.text
        assert response.json()["serving"] == f"queue={version},priority={version}"
        answer = client.post("/api/v1/classify", json={"ticket_data": "printer screen broken"})
        assert answer.status_code == 200
        assert answer.json()["model_version"] == f"queue={version},priority={version}"
        assert answer.json()["predicted_label"] in QUEUES

        # the job row and its worker's process are gone; a new job may start
        with store.session() as s:
            row = s.get(TrainingJob, job_id)
            assert row is not None and row.trigger == "api" and row.pid
        assert wait_gone(row.pid)
    store.dispose()


@pytest.mark.slow
def test_classic_train_waits_for_its_model_on_a_fresh_install(tmp_path: Path) -> None:
    # the ATC guide's order: upload, train, classify at once (no polling), on an installation without any model
    config = _config(tmp_path)
    store = Store(config.store_url)
    with live_api(config, store) as (client, _app):
        assert client.post("/api/v1/classify", json={"ticket_data": "printer"}).status_code == 503
        upload = client.post("/api/v1/train-data", content=sample_csv(), headers={"Content-Type": "text/csv"})
        assert upload.status_code == 201, upload.text
        response = client.post("/api/v1/train", timeout=300)
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["state"] == "succeeded" and job["progress"] == 1.0, job
        assert response.headers["location"] == f"/api/v1/train/{job['job_id']}"
        answer = client.post("/api/v1/classify", json={"ticket_data": "printer screen broken"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predicted_label"] in QUEUES
        assert answer.json()["model_version"] == f"queue={job['metrics']['version']},priority={job['metrics']['version']}"
    store.dispose()


def test_train_answers_when_its_wait_limit_passes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.api.train_wait_s = 1.0
    # one way to lower the priority: learning.training_nice applies to API jobs too (was a fixed +10)
    config.learning.training_nice = 3
    store = Store(config.store_url)
    install_tiny_models(config, store)
    with live_api(config, store) as (client, _app):
        client.post("/api/v1/train-data", content=sample_csv(), headers={"Content-Type": "text/csv"})
        started = time.monotonic()
        response = client.post("/api/v1/train", json={"fields": ["queue"], "epochs": 50})
        assert time.monotonic() - started < 10
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["state"] in ("queued", "running")
        assert "still running after 1 s" in body["message"] and body["status_url"] in body["message"]
        assert response.headers["location"] == body["status_url"]
        pid = _running_pid(store, body["job_id"])
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)
        assert client.delete(body["status_url"]).json()["state"] == "cancelled"
    store.dispose()


def _running_pid(store: Store, job_id: int, timeout: float = 60.0) -> int:
    """The pid of the job's worker once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.session() as s:
            row = s.get(TrainingJob, job_id)
            if row is not None and row.state == "running" and row.pid:
                return row.pid
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not start running")


@pytest.mark.slow
def test_cancel_then_train_again_and_worker_failure(installed, tmp_path: Path) -> None:
    config, store = installed
    with live_api(config, store) as (client, _app):
        client.post("/api/v1/train-data", content=sample_csv(), headers={"Content-Type": "text/csv"})
        job_id = client.post("/api/v1/train?wait=false", json={"fields": ["queue"], "epochs": 50}).json()["job_id"]
        response = client.delete(f"/api/v1/train/{job_id}")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
        # cancelling again: it already ended
        assert client.post(f"/api/v1/train/{job_id}/cancel").status_code == 409
        with store.session() as s:
            pid = s.get(TrainingJob, job_id).pid  # type: ignore[union-attr]
        assert wait_gone(pid)
        assert _poll(client, job_id)["state"] == "cancelled"

        # a base model that cannot be trained from: the job fails with a one-line error, the service goes on
        bogus = tmp_path / "bogus-base"
        bogus.mkdir()
        (bogus / "config.json").write_text("{}", encoding="utf-8")
        response = client.post("/api/v1/train?wait=false", json={"fields": ["queue"], "base_model": str(bogus)})
        assert response.status_code == 202, response.text
        job = _poll(client, response.json()["job_id"])
        assert job["state"] == "failed"
        assert job["error"] and "\n" not in job["error"] and "Traceback" not in job["error"]
        log_file = job_dir(config, job["job_id"]) / "worker.log"
        assert "Traceback" in log_file.read_text(encoding="utf-8")
        assert client.post("/api/v1/classify", json={"ticket_data": "printer"}).status_code == 200
        # nothing was activated
        listing = client.get("/api/v1/models").json()
        assert {m["version"] for m in listing["models"] if m["active"]} == {"tiny-1"}


def test_stale_running_job_is_settled_at_start(installed, tmp_path: Path) -> None:
    config, store = installed
    from connector.store.db import utcnow

    with store.session() as s:
        s.add(TrainingJob(state="running", trigger="api", params={}, progress=0.4, metrics={}, pid=2**22 + 12345, created_at=utcnow()))
    with live_api(config, store) as (client, _app):
        job = client.get("/api/v1/train/1").json()
        assert job["state"] == "failed" and "interrupted" in job["error"]


def test_job_running_in_another_process_blocks_training(installed, tmp_path: Path) -> None:
    config, store = installed
    from connector.store.db import utcnow

    with live_api(config, store) as (client, _app):
        client.post("/api/v1/train-data", content=sample_csv(), headers={"Content-Type": "text/csv"})
        with store.session() as s:  # e.g. the learning loop's retraining, alive (this very process)
            s.add(TrainingJob(state="running", trigger="schedule", params={}, progress=0.1, metrics={}, pid=os.getpid(), created_at=utcnow()))
        response = client.post("/api/v1/train")
        assert response.status_code == 409
        # and it is not ours to cancel
        other = response.json()["error"]["job_id"]
        assert client.delete(f"/api/v1/train/{other}").status_code == 409


def test_worker_lowers_its_priority_by_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.training import worker

    niced: list[int] = []
    monkeypatch.setattr(worker.os, "nice", lambda inc: niced.append(inc) or inc)
    worker.lower_priority(7)
    worker.lower_priority(0)  # 0: the priority is left alone
    assert niced == [7]

    config = api_config(tmp_path, tokens=True)
    spec = JobSpec.build(config, 1, "api", {"dataset_id": 1, "fields": ["queue"]})
    spec.write(tmp_path / "spec.json")
    assert JobSpec.read(tmp_path / "spec.json") == spec
    assert "token" not in (tmp_path / "spec.json").read_text()


def test_parent_watch_acts_only_when_the_parent_is_gone() -> None:
    import threading

    from connector.training.parent import ParentWatch

    cancel = threading.Event()
    alive = ParentWatch(os.getppid(), cancel)
    # the kernel also sends the death signal when the thread that started the worker ends: ignored while the
    # parent process lives
    alive._on_death_signal(0, None)
    assert not alive.gone and not cancel.is_set()
    gone = ParentWatch(os.getppid() + 1_000_000, cancel)
    assert gone.gone
    gone._on_death_signal(0, None)
    assert cancel.is_set()
    assert not ParentWatch(None, threading.Event()).gone


def test_worker_respects_the_shared_training_lock(tmp_path: Path) -> None:
    from connector.store.db import utcnow
    from connector.training import worker

    config = _config(tmp_path)
    store = Store(config.store_url)
    with store.session() as s:
        job = TrainingJob(state="queued", trigger="api", params={}, progress=0.0, metrics={}, created_at=utcnow())
        s.add(job)
        s.flush()
        job_id = job.id
    spec = JobSpec.build(config, job_id, "api", {"dataset_id": 1, "fields": ["queue"]})
    with held_training_lock(config.state_dir):  # e.g. the learning loop's retraining
        assert worker.run(spec) == 1
    with store.session() as s:
        row = s.get(TrainingJob, job_id)
        assert row is not None and row.state == "failed" and "training lock" in (row.error or "")
    store.dispose()


def test_api_promotion_scores_with_the_served_length_and_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One promotion rule: API jobs score candidates as the learning loop does, with model.max_length and cpu_precision."""
    from connector.model import classifier
    from connector.model.data import LabeledData
    from connector.model.train import TrainedModel, TrainingRun
    from connector.training.recipes.promotion import register_and_activate

    config = _config(tmp_path)
    config.model.max_length = 24
    config.model.cpu_precision = "fp32"
    store = Store(config.store_url)
    install_tiny_models(config, store, version="tiny-1")
    path = build_tiny_model(config.models_dir / "queue" / "tiny-2", QUEUES, version="tiny-2", field="queue")
    holdout = LabeledData(["printer jam", "vpn down", "printer toner", "vpn slow"], {"queue": [QUEUES[0], QUEUES[1], QUEUES[0], QUEUES[1]]})
    run = TrainingRun("tiny-2", {"queue": TrainedModel.from_dir(path)}, {}, holdout, "fp", 0.0)
    loaded: list[tuple[int, str]] = []
    original = classifier.FieldModel.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        loaded.append((kwargs.get("max_length"), kwargs.get("cpu_precision")))
        original(self, *args, **kwargs)

    monkeypatch.setattr(classifier.FieldModel, "__init__", recording)
    decisions = register_and_activate(config, store, run, mode="if_better", training=config.training)
    assert set(decisions) == {"queue"}
    scoring = [load for load in loaded if load[0] is not None]  # the registry's load check passes no length
    assert scoring and set(scoring) == {(24, "fp32")}
    store.dispose()
