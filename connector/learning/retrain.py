"""Retraining: when to retrain, and the learning loop's front end over :mod:`connector.training`.

:func:`retrain` starts a ``retrain`` job (trigger ``schedule``, ``manual`` or
``cli``) on the one training runner and waits for it: the worker
(``python -m connector.training.worker``, priority lowered by
``learning.training_nice``) trains the challenger on the stored examples,
scores champion and challenger on the fixed held-apart set and promotes only
under the registry's rule; a failed, killed or timed-out worker changes
nothing (the row says what happened).  One training at a time, across
processes: the training lock and the ``training_jobs`` rows
(:mod:`connector.training.jobs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from connector.config import AppConfig
from connector.store.db import Store, as_utc
from connector.store.tables import Correction, TrainingExample, TrainingJob
from connector.training.jobs import JobConflict, active_job, job_kind, job_row
from connector.training.runner import TrainingRunner

log = logging.getLogger(__name__)

__all__ = ["JOB_KIND", "RetrainBusy", "RetrainResult", "active_job", "job_result", "latest_jobs",
           "new_since_last_retrain", "retrain", "should_retrain"]

#: the ``training_jobs.params["kind"]`` of the learning loop's jobs
JOB_KIND = "retrain"

#: another training job is queued or running (the training package's conflict, by its learning-loop name)
RetrainBusy = JobConflict


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


# --------------------------------------------------------------------------- when to retrain


def last_retrain_started(store: Store) -> datetime | None:
    """Start of the newest finished learning-loop job (failed ones included: they saw the data too)."""
    with store.session() as session:
        jobs = session.scalars(
            select(TrainingJob).where(TrainingJob.state.in_(("succeeded", "failed"))).order_by(TrainingJob.id.desc())
        )
        for job in jobs:
            if job_kind(job.params) == JOB_KIND and job.state == "succeeded":
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


def retrain_params(config: AppConfig, *, force: bool, base_dataset: Path | None) -> dict[str, Any]:
    """The ``params`` of a retraining job (its row and its worker's spec)."""
    return {
        "force": force,
        "base_dataset": str(base_dataset or config.learning.base_dataset or "") or None,
        "fields": list(config.model.fields),
    }


def job_result(store: Store, job_id: int) -> RetrainResult:
    row = job_row(store, job_id)
    if row is None:
        raise KeyError(job_id)
    return RetrainResult(job_id, row["state"], row["error"], row["metrics"])


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
    runner = TrainingRunner(config, store)
    started = runner.start(JOB_KIND, trigger=trigger, params=retrain_params(config, force=force, base_dataset=base_dataset))
    limit = timeout if timeout is not None else config.learning.training_timeout_minutes * 60
    runner.watch(started, timeout=limit, should_stop=should_stop)
    result = job_result(store, started.job_id)
    log.info("retraining job %d ended: %s%s", result.job_id, result.state, f" ({result.error})" if result.error else "")
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
            if job_kind(job.params) != JOB_KIND:
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
