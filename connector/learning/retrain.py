"""Retraining: when to retrain, and running one training at a time in a separate, nicer process.

:func:`retrain` adds a ``training_jobs`` row (trigger ``schedule``, ``manual``
or ``cli``), writes the job's specification and starts
``python -m connector.learning.worker SPEC`` with a lower CPU priority
(``os.nice``), so polling and routing in the daemon never stall.  It waits for
the process and returns what the job row says.  The worker trains the
challenger on the stored examples, scores champion and challenger on the
fixed held-apart set and promotes only under the registry's rule; a failed,
killed or timed-out worker changes nothing (the row says what happened).

One training at a time, across processes: a file lock held by the worker
(``<state_dir>/training.lock``) and the ``training_jobs`` rows (a queued or
running job whose process is alive blocks a new one; one whose process is
gone is settled as failed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from connector.config import AppConfig
from connector.store.db import Store, as_utc, utcnow
from connector.store.tables import Correction, TrainingExample, TrainingJob
from connector.training_lock import pid_alive

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
#: the ``training_jobs.params["kind"]`` of the learning loop's jobs
JOB_KIND = "retrain"


class RetrainBusy(Exception):
    """Another training job is queued or running."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"training job {job_id} is still running; one training at a time")
        self.job_id = job_id


@dataclass
class RetrainResult:
    job_id: int
    state: str
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> dict[str, bool]:
        return {name: bool(f.get("promoted")) for name, f in self.metrics.get("fields", {}).items()}

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "state": self.state, "error": self.error, **self.metrics}


def job_directory(config: AppConfig, job_id: int) -> Path:
    return config.state_dir / "learning" / "jobs" / str(job_id)


def _count_training_job(state: str) -> None:
    try:
        from connector.metrics import TRAINING_JOBS
    except ImportError:  # pragma: no cover - metrics are optional here
        return
    TRAINING_JOBS.labels(state=state).inc()


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
        job.finished_at = utcnow()
    _count_training_job(state)
    return True


def active_job(store: Store, *, exclude: int | None = None) -> int | None:
    """A queued/running job whose process is alive; jobs whose process is gone are settled as failed."""
    with store.session() as session:
        rows = [
            (row.id, row.pid)
            for row in session.scalars(select(TrainingJob).where(TrainingJob.state.in_(ACTIVE_STATES)))
        ]
    for job_id, pid in rows:
        if job_id == exclude:
            continue
        if pid_alive(pid):
            return job_id
        if settle(store, job_id, "failed", error="interrupted: the training process is gone"):
            log.warning("training job %d was interrupted (its process is gone); the active model is unchanged", job_id)
    return None


# --------------------------------------------------------------------------- when to retrain


def last_retrain_started(store: Store) -> datetime | None:
    """Start of the newest finished learning-loop job (failed ones included: they saw the data too)."""
    with store.session() as session:
        jobs = session.scalars(
            select(TrainingJob).where(TrainingJob.state.in_(("succeeded", "failed"))).order_by(TrainingJob.id.desc())
        )
        for job in jobs:
            if (job.params or {}).get("kind") == JOB_KIND and job.state == "succeeded":
                return as_utc(job.started_at or job.created_at)
    return None


def new_since_last_retrain(store: Store) -> dict[str, int]:
    """Training examples (not held apart) and corrections stored or changed since the last retraining."""
    since = last_retrain_started(store)
    with store.session() as session:
        examples = select(func.count()).select_from(TrainingExample).where(TrainingExample.is_eval.is_(False))
        corrections = select(func.count()).select_from(Correction)
        if since is not None:
            examples = examples.where(TrainingExample.updated_at >= since)
            corrections = corrections.where(Correction.detected_at >= since)
        return {"examples": int(session.scalar(examples) or 0), "corrections": int(session.scalar(corrections) or 0)}


def should_retrain(config: AppConfig, store: Store) -> tuple[bool, str]:
    """Whether enough new examples or corrections arrived for the schedule to retrain, and why."""
    counts = new_since_last_retrain(store)
    need = config.learning.retrain_min_new_examples
    if counts["examples"] >= need or counts["corrections"] >= need:
        return True, f"{counts['examples']} new examples, {counts['corrections']} corrections (threshold {need})"
    return False, f"only {counts['examples']} new examples and {counts['corrections']} corrections (threshold {need})"


# --------------------------------------------------------------------------- running a job


def worker_spec(
    config: AppConfig, job_id: int, *, force: bool, base_dataset: Path | None, store_url: str | None = None
) -> dict[str, Any]:
    """What the worker needs: the configuration without systems and API tokens (no secrets)."""
    data = config.model_dump(mode="json", exclude={"systems", "api", "source_path"})
    data["state_dir"] = str(config.state_dir.resolve())
    data.setdefault("store", {})["url"] = store_url or config.store_url
    return {
        "job_id": job_id,
        "config": data,
        "force": force,
        "base_dataset": str(base_dataset) if base_dataset else None,
    }


def _create_job(config: AppConfig, store: Store, trigger: str, force: bool, base_dataset: Path | None) -> int:
    other = active_job(store)
    if other is not None:
        raise RetrainBusy(other)
    with store.session() as session:
        job = TrainingJob(
            state="queued",
            trigger=trigger,
            params={
                "kind": JOB_KIND,
                "force": force,
                "base_dataset": str(base_dataset or config.learning.base_dataset or "") or None,
                "fields": list(config.model.fields),
            },
            progress=0.0,
            metrics={},
            # this (live) process owns the job until the worker writes its own pid
            pid=os.getpid(),
            created_at=utcnow(),
        )
        session.add(job)
        session.flush()
        job_id = job.id
    _count_training_job("queued")
    return job_id


def _spawn(config: AppConfig, spec_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    niceness = config.learning.training_nice

    def lower_priority() -> None:  # runs in the child before exec
        if niceness:
            os.nice(niceness)

    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "connector.learning.worker", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=lower_priority,
            start_new_session=True,
            close_fds=True,
        )


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def job_result(store: Store, job_id: int) -> RetrainResult:
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            raise KeyError(job_id)
        return RetrainResult(job_id, job.state, job.error, dict(job.metrics or {}))


def retrain(
    config: AppConfig,
    store: Store,
    *,
    trigger: str = "manual",
    force: bool = False,
    base_dataset: Path | None = None,
    timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RetrainResult:
    """Run one retraining in a worker process and wait for it; raises RetrainBusy when one runs.

    ``should_stop`` (polled every second, e.g. the daemon's shutdown flag) cancels the training:
    the worker gets SIGTERM and stops without touching the active model.
    """
    job_id = _create_job(config, store, trigger, force, base_dataset)
    directory = job_directory(config, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / "spec.json"
    spec_path.write_text(json.dumps(worker_spec(config, job_id, force=force, base_dataset=base_dataset, store_url=store.url), indent=2), encoding="utf-8")
    try:
        proc = _spawn(config, spec_path, directory / "worker.log")
    except OSError as exc:
        settle(store, job_id, "failed", error=f"cannot start the training process: {exc}")
        raise
    log.info("retraining job %d started (pid %d, trigger %s)", job_id, proc.pid, trigger)
    limit = timeout if timeout is not None else config.learning.training_timeout_minutes * 60
    deadline = time.monotonic() + limit
    try:
        while True:
            try:
                code = proc.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if should_stop is not None and should_stop():
                    _stop(proc)
                    settle(store, job_id, "cancelled", error="stopped with the daemon; the active model is unchanged")
                    return job_result(store, job_id)
                if time.monotonic() >= deadline:
                    _stop(proc)
                    settle(store, job_id, "failed", error=f"timed out after {limit:.0f} s; the active model is unchanged")
                    return job_result(store, job_id)
    except BaseException:
        # the caller is interrupted: the worker must not outlive it unobserved
        _stop(proc)
        settle(store, job_id, "cancelled", error="interrupted; the active model is unchanged")
        raise
    if code != 0:
        settled_here = settle(
            store,
            job_id,
            "failed",
            error=f"the training process ended with exit code {code}; see {directory / 'worker.log'}",
        )
    else:
        settled_here = settle(
            store, job_id, "failed", error=f"the training process ended without a result; see {directory / 'worker.log'}"
        )
    result = job_result(store, job_id)
    if not settled_here:
        # the worker recorded the outcome in its own process; count it in this one's metrics too
        _count_training_job(result.state)
    log.info("retraining job %d ended: %s%s", job_id, result.state, f" ({result.error})" if result.error else "")
    return result


def latest_jobs(store: Store, limit: int = 5) -> list[dict[str, Any]]:
    """The newest learning-loop training jobs, newest first (for ``status``).

    A queued/running job whose process is gone (a worker killed with -9) is
    settled as failed first, by the same check a new retraining makes, so it
    is never reported as running.
    """
    active_job(store)
    out = []
    with store.session() as session:
        rows = session.scalars(select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit * 4))
        for job in rows:
            if (job.params or {}).get("kind") != JOB_KIND:
                continue
            out.append(
                {
                    "id": job.id,
                    "state": job.state,
                    "trigger": job.trigger,
                    "created_at": as_utc(job.created_at).isoformat() if job.created_at else None,
                    "finished_at": as_utc(job.finished_at).isoformat() if job.finished_at else None,
                    "error": job.error,
                    "promoted": {k: v.get("promoted") for k, v in (job.metrics or {}).get("fields", {}).items()},
                    "report": (job.metrics or {}).get("report"),
                }
            )
            if len(out) >= limit:
                break
    return out
