"""Training jobs: rows of the ``training_jobs`` table, one spec format, one job folder.

Every job has a ``kind`` (``params["kind"]``): ``api`` (a dataset uploaded through the REST
API) or ``retrain`` (the learning loop's champion/challenger retraining).  Rows written before
the kind existed and carrying none are ``api`` jobs.  A job's folder is
``<state_dir>/jobs/<id>/`` with ``spec.json`` (a :class:`JobSpec`) and ``worker.log``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connector.config import AppConfig
from connector.metrics import TRAINING_JOBS
from connector.store.db import Store, utcnow
from connector.store.tables import TrainingJob
from connector.processes import pid_alive

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
KINDS = ("api", "retrain")
#: the one outcome of a job whose worker finds the training lock held by another process
BUSY_LOCK_STATE = "failed"
BUSY_LOCK_ERROR = "another training is running (training lock held)"


class JobConflict(Exception):
    """A training job is already queued or running (one training at a time)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"training job {job_id} is still running; one training at a time")
        self.job_id = job_id


class JobNotFound(Exception):
    pass


class JobFinished(Exception):
    """The job cannot be cancelled: it already ended."""

    def __init__(self, job_id: int, state: str) -> None:
        super().__init__(f"training job {job_id} already ended ({state})")
        self.state = state


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a worker needs: the configuration without systems and API tokens (no secrets)."""

    job_id: int
    kind: str
    #: :meth:`AppConfig.model_dump` without ``systems``, ``api`` and ``source_path``; absolute state dir and store URL
    config: dict[str, Any]
    #: what the kind's recipe needs (dataset, fields, activation policy / force, base dataset)
    params: dict[str, Any] = field(default_factory=dict)
    #: the process that started the worker (the API server, the daemon, the CLI): the worker ends when it is gone
    parent_pid: int | None = None

    @classmethod
    def build(cls, config: AppConfig, job_id: int, kind: str, params: dict[str, Any], *, store_url: str | None = None) -> JobSpec:
        data = config.model_dump(mode="json", exclude={"systems", "api", "source_path"})
        data["state_dir"] = str(config.state_dir.resolve())
        data.setdefault("store", {})["url"] = store_url or config.store_url
        return cls(job_id=job_id, kind=kind, config=data, params=params, parent_pid=os.getpid())

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> JobSpec:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def job_dir(config: AppConfig, job_id: int) -> Path:
    """The job's folder: ``spec.json`` and ``worker.log``."""
    return config.state_dir / "jobs" / str(job_id)


def job_kind(params: dict[str, Any] | None) -> str:
    return str((params or {}).get("kind") or "api")


def count_job(state: str) -> None:
    """``training_jobs_total`` by state."""
    TRAINING_JOBS.labels(state=state).inc()


def create_job(store: Store, *, kind: str, trigger: str, params: dict[str, Any], dataset_id: int | None = None) -> int:
    """Add a queued job; raises :class:`JobConflict` while another one is queued or running."""
    other = active_job(store)
    if other is not None:
        raise JobConflict(other)
    with store.session() as session:
        job = TrainingJob(
            state="queued", trigger=trigger, dataset_id=dataset_id, params={"kind": kind, **params},
            progress=0.0, metrics={}, created_at=utcnow(),
            pid=os.getpid(),  # this (live) process owns the job until the worker writes its own pid
        )
        session.add(job)
        session.flush()
        job_id = job.id
    count_job("queued")
    return job_id


def settle(store: Store, job_id: int, state: str, *, error: str | None = None, metrics: dict[str, Any] | None = None) -> bool:
    """Move a queued/running job to a final state; False when it had already ended."""
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return False
        job.state = state
        if error is not None:
            job.error = error
        if metrics is not None:
            job.metrics = metrics
        if state == "succeeded":
            job.progress = 1.0
        job.finished_at = utcnow()
    count_job(state)
    return True


def update_job(store: Store, job_id: int, **values: Any) -> None:
    """Set columns of a job that is still queued/running (a settled row is left alone)."""
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return
        for key, value in values.items():
            setattr(job, key, value)


def job_row(store: Store, job_id: int) -> dict[str, Any] | None:
    """State, error, metrics, params and pid of a job (None when there is no such job)."""
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            return None
        return {"state": job.state, "error": job.error, "metrics": dict(job.metrics or {}),
                "params": dict(job.params or {}), "pid": job.pid}


def active_job(store: Store, *, exclude: int | None = None) -> int | None:
    """A queued/running job whose process is alive; jobs whose process is gone are settled as failed."""
    with store.session() as session:
        rows = [(row.id, row.pid) for row in session.scalars(select(TrainingJob).where(TrainingJob.state.in_(ACTIVE_STATES)))]
    for job_id, pid in rows:
        if job_id == exclude:
            continue
        if pid_alive(pid):
            return job_id
        if settle(store, job_id, "failed", error="interrupted: the training process is gone"):
            log.warning("training job %d was interrupted (its process is gone); the active model is unchanged", job_id)
    return None
