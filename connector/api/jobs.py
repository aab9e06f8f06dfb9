"""Training jobs started by the API: one at a time, each in a separate, lower-priority process.

:meth:`TrainingJobRunner.start` adds a ``training_jobs`` row, writes the job's
specification to ``<state_dir>/jobs/<id>/spec.json`` and starts
``python -m connector.api.train_worker SPEC`` (its output goes to ``worker.log``
beside it).  The worker lowers its own priority (``os.nice``), updates the
row (state, progress, metrics, error) as it goes, registers the trained
models and activates them according to the request.  The runner watches the
process: when it ends it settles the row if the worker could not (a crash),
and asks the API to swap in newly activated models.

One training at a time: a second :meth:`start` while a job is queued or
running — in this process or, according to the ``training_jobs`` table, in
another one such as the learning loop — raises :class:`JobConflict`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connector.config import AppConfig
from connector.metrics import TRAINING_JOBS
from connector.store.db import Store, utcnow
from connector.store.tables import TrainingJob
from connector.training_lock import pid_alive

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")


class JobConflict(Exception):
    """A training job is already queued or running."""

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
    """Everything the worker process needs (no secrets: the API tokens are not passed)."""

    job_id: int
    store_url: str
    state_dir: str
    models_dir: str
    dataset_id: int
    dataset_path: str
    fields: list[str]
    model: dict[str, Any]
    training: dict[str, Any]
    base_model: str | None = None
    epochs: int | None = None
    activate: str = "if_better"
    extra: dict[str, Any] = field(default_factory=dict)
    #: the process that started the worker (the API server or the daemon): the worker ends when it is gone
    parent_pid: int | None = None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> JobSpec:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def job_dir(config: AppConfig, job_id: int) -> Path:
    return config.state_dir / "jobs" / str(job_id)


def settle_job(store: Store, job_id: int, state: str, *, error: str | None = None) -> bool:
    """Move a job that is still queued/running to a final state; False if it had already ended."""
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return False
        job.state = state
        job.error = error if error is not None else job.error
        job.finished_at = utcnow()
    TRAINING_JOBS.labels(state=state).inc()
    return True


class TrainingJobRunner:
    """Starts, watches and cancels training worker processes (one at a time)."""

    def __init__(
        self,
        config: AppConfig,
        store: Store,
        *,
        on_finished: Callable[[], Awaitable[object]] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.store = store
        self.on_finished = on_finished
        self.python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._job_id: int | None = None
        self._cancelled: set[int] = set()
        #: jobs of this runner not yet settled: process alive, or new models not yet swapped in
        self._unsettled: set[int] = set()
        #: per job of this runner: the task that watches its process and swaps in its models
        self._watchers: dict[int, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ queries

    def is_settling(self, job_id: int) -> bool:
        """True until the job's process ended and its models (if any) are in service."""
        return job_id in self._unsettled

    @property
    def running_job(self) -> int | None:
        proc = self._proc
        return self._job_id if proc is not None and proc.poll() is None else None

    def _active_elsewhere(self) -> int | None:
        """A queued/running job of another process that is still alive (stale ones are settled)."""
        with self.store.session() as session:
            rows = session.scalars(select(TrainingJob).where(TrainingJob.state.in_(ACTIVE_STATES))).all()
            active = [(row.id, row.pid, row.state, row.created_at) for row in rows]
        for job_id, pid, _state, _created in active:
            if job_id == self._job_id:
                continue
            if pid_alive(pid):
                return job_id
            settle_job(self.store, job_id, "failed", error="interrupted: the training process is gone")
        return None

    def recover_stale(self) -> None:
        """At start: jobs left queued/running by a process that no longer exists are marked failed."""
        self._active_elsewhere()

    # ------------------------------------------------------------------ start

    async def start(
        self,
        *,
        dataset_id: int,
        dataset_path: str,
        fields: list[str],
        base_model: str | None,
        epochs: int | None,
        activate: str,
        trigger: str = "api",
    ) -> int:
        """Start a training job; its id at once.  Raises JobConflict while one is queued or running."""
        job_id, proc = await asyncio.to_thread(
            self._start, dataset_id, dataset_path, fields, base_model, epochs, activate, trigger
        )
        self._watchers[job_id] = asyncio.create_task(self._wait(proc, job_id), name=f"training-job-{job_id}")
        return job_id

    async def wait_settled(self, job_id: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the job of this runner ended and its models are in service."""
        watcher = self._watchers.get(job_id)
        if watcher is None:
            return not self.is_settling(job_id)
        done, _pending = await asyncio.wait({watcher}, timeout=timeout)
        return bool(done)

    def _start(
        self,
        dataset_id: int,
        dataset_path: str,
        fields: list[str],
        base_model: str | None,
        epochs: int | None,
        activate: str,
        trigger: str,
    ) -> tuple[int, subprocess.Popen[bytes]]:
        with self._lock:
            running = self.running_job
            if running is not None:
                raise JobConflict(running)
            other = self._active_elsewhere()
            if other is not None:
                raise JobConflict(other)
            params = {
                "fields": fields,
                "base_model": base_model,
                "epochs": epochs,
                "activate": activate,
            }
            with self.store.session() as session:
                job = TrainingJob(
                    state="queued",
                    trigger=trigger,
                    dataset_id=dataset_id,
                    params=params,
                    progress=0.0,
                    metrics={},
                    created_at=utcnow(),
                    # this (live) process owns the job until the worker writes its own pid
                    pid=os.getpid(),
                )
                session.add(job)
                session.flush()
                job_id = job.id
            TRAINING_JOBS.labels(state="queued").inc()
            spec = JobSpec(
                job_id=job_id,
                store_url=self.config.store_url,
                state_dir=str(self.config.state_dir.resolve()),
                models_dir=str(self.config.models_dir.resolve()),
                dataset_id=dataset_id,
                dataset_path=dataset_path,
                fields=fields,
                model=self.config.model.model_dump(mode="json"),
                training=self.config.training.model_dump(mode="json"),
                base_model=base_model,
                epochs=epochs,
                activate=activate,
                parent_pid=os.getpid(),
            )
            directory = job_dir(self.config, job_id)
            spec_path = directory / "spec.json"
            spec.write(spec_path)
            try:
                proc = self._spawn(spec_path, directory / "worker.log")
            except OSError as exc:
                settle_job(self.store, job_id, "failed", error=f"cannot start the training process: {exc}")
                raise
            with self.store.session() as session:
                row = session.get(TrainingJob, job_id)
                if row is not None and row.state == "queued":
                    row.pid = proc.pid
            self._proc, self._job_id = proc, job_id
            self._unsettled.add(job_id)
            log.info("training job %d started (pid %d, dataset %d, fields %s)", job_id, proc.pid, dataset_id, fields)
        return job_id, proc

    def _spawn(self, spec_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = project_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with log_path.open("ab") as out:
            return subprocess.Popen(
                [self.python, "-m", "connector.api.train_worker", str(spec_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: cancel stops it and its helpers
                close_fds=True,
            )

    async def _wait(self, proc: subprocess.Popen[bytes], job_id: int) -> None:
        code = await asyncio.to_thread(proc.wait)
        if job_id in self._cancelled:
            await asyncio.to_thread(settle_job, self.store, job_id, "cancelled", error="cancelled")
        elif code != 0:
            error = f"the training process ended with exit code {code}; see {job_dir(self.config, job_id) / 'worker.log'}"
            await asyncio.to_thread(settle_job, self.store, job_id, "failed", error=error)
        else:
            await asyncio.to_thread(settle_job, self.store, job_id, "failed", error="the training process ended early")
        with self._lock:
            if self._job_id == job_id:
                self._proc = None
        state = await asyncio.to_thread(self._state_of, job_id)
        log.info("training job %d ended: %s", job_id, state)
        try:
            if state == "succeeded" and self.on_finished is not None:
                await self.on_finished()
        except Exception:
            log.exception("swapping in the models of training job %d failed", job_id)
        finally:
            self._unsettled.discard(job_id)
            self._watchers.pop(job_id, None)

    def _state_of(self, job_id: int) -> str | None:
        with self.store.session() as session:
            job = session.get(TrainingJob, job_id)
            return job.state if job is not None else None

    # ------------------------------------------------------------------ cancel and stop

    async def cancel(self, job_id: int) -> str:
        """Stop a queued or running job of this process; its final state."""
        return await asyncio.to_thread(self._cancel, job_id)

    def _cancel(self, job_id: int) -> str:
        with self._lock:
            state = self._state_of(job_id)
            if state is None:
                raise JobNotFound(job_id)
            if state in FINAL_STATES:
                raise JobFinished(job_id, state)
            proc = self._proc if self._job_id == job_id else None
            if proc is None or proc.poll() is not None:
                with self.store.session() as session:
                    pid = session.get(TrainingJob, job_id).pid  # type: ignore[union-attr]
                if pid_alive(pid):
                    raise JobConflict(job_id)  # another process's job: not ours to stop
                settle_job(self.store, job_id, "cancelled", error="cancelled")
                return "cancelled"
            self._cancelled.add(job_id)
            _terminate(proc)
        settle_job(self.store, job_id, "cancelled", error="cancelled")
        return "cancelled"

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop a running job (the server is going away) and wait briefly for its process."""
        proc, job_id = self._proc, self._job_id
        if proc is not None and proc.poll() is None and job_id is not None:
            log.warning("stopping training job %d: the API is shutting down", job_id)
            self._cancelled.add(job_id)
            _terminate(proc)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
            except TimeoutError:
                _kill(proc)
            await asyncio.to_thread(settle_job, self.store, job_id, "cancelled", error="the API shut down")
        for watcher in list(self._watchers.values()):
            if not watcher.done():
                watcher.cancel()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            proc.terminate()
        except ProcessLookupError:
            pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
