"""The one runner of training jobs: spawn the worker, watch it, cancel it, settle its row.

:meth:`TrainingRunner.start` adds the ``training_jobs`` row, writes the job's spec and starts
``python -m connector.training.worker SPEC`` in its own process group (output to ``worker.log``).
:meth:`TrainingRunner.watch` waits for it (with a time limit and a stop flag),
:meth:`TrainingRunner.cancel` stops it, and :meth:`TrainingRunner.finish` settles a row the
worker could not settle itself (a crash, a kill) and counts the outcome in this process's
``training_jobs_total``.  The API and the learning loop are front ends over this class.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.config import AppConfig
from connector.store.db import Store
from connector.training.jobs import (
    FINAL_STATES,
    JobConflict,
    JobFinished,
    JobNotFound,
    JobSpec,
    active_job,
    count_job,
    create_job,
    job_dir,
    job_row,
    settle,
    update_job,
)
from connector.processes import pid_alive

log = logging.getLogger(__name__)

WORKER_MODULE = "connector.training.worker"


@dataclass(frozen=True)
class Started:
    job_id: int
    proc: subprocess.Popen[bytes]
    directory: Path


def spawn(spec_path: Path, log_path: Path, python: str = sys.executable) -> subprocess.Popen[bytes]:
    """Start the worker on ``spec_path``; it lowers its own priority (``learning.training_nice``)."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [python, "-m", WORKER_MODULE, str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: cancel stops it and its helpers
            close_fds=True,
        )


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the worker's group (it cancels cleanly), SIGKILL after ``grace`` seconds."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


class TrainingRunner:
    """Starts, watches, cancels and settles training worker processes (one at a time)."""

    def __init__(self, config: AppConfig, store: Store, *, python: str = sys.executable) -> None:
        self.config = config
        self.store = store
        self.python = python
        self._lock = threading.Lock()
        self._running: Started | None = None
        self._cancelled: dict[int, str] = {}

    @property
    def running_job(self) -> int | None:
        started = self._running
        return started.job_id if started is not None and started.proc.poll() is None else None

    def start(self, kind: str, *, trigger: str, params: dict[str, Any], dataset_id: int | None = None) -> Started:
        """Add the job and start its worker; raises :class:`JobConflict` while one is queued or running."""
        with self._lock:
            running = self.running_job
            if running is not None:
                raise JobConflict(running)
            job_id = create_job(self.store, kind=kind, trigger=trigger, params=params, dataset_id=dataset_id)
            directory = job_dir(self.config, job_id)
            spec_path = directory / "spec.json"
            spec_params = params if dataset_id is None else {**params, "dataset_id": dataset_id}
            JobSpec.build(self.config, job_id, kind, spec_params, store_url=self.store.url).write(spec_path)
            try:
                proc = spawn(spec_path, directory / "worker.log", self.python)
            except OSError as exc:
                settle(self.store, job_id, "failed", error=f"cannot start the training process: {exc}")
                raise
            update_job(self.store, job_id, pid=proc.pid)
            self._running = Started(job_id, proc, directory)
        log.info("training job %d (%s, %s) started: pid %d", job_id, kind, trigger, proc.pid)
        return self._running

    def watch(self, started: Started, *, timeout: float | None = None, should_stop: Callable[[], bool] | None = None) -> str:
        """Wait for the worker (polling ``should_stop`` every second); the job's final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
                try:
                    code = started.proc.wait(timeout=wait)
                    return self.finish(started.job_id, code)
                except subprocess.TimeoutExpired:
                    pass
                if should_stop is not None and should_stop():
                    return self._stop(started, "cancelled", "stopped with the daemon; the active model is unchanged")
                if deadline is not None and time.monotonic() >= deadline:
                    return self._stop(started, "failed", f"timed out after {timeout:.0f} s; the active model is unchanged")
        except BaseException:
            # the caller is interrupted: the worker must not outlive it unobserved
            self._stop(started, "cancelled", "interrupted; the active model is unchanged")
            raise

    def _stop(self, started: Started, state: str, error: str) -> str:
        self._cancelled[started.job_id] = error
        stop(started.proc)
        settle(self.store, started.job_id, state, error=error)
        return self.finish(started.job_id, started.proc.returncode)

    def finish(self, job_id: int, code: int | None) -> str:
        """The worker ended: settle its row if it could not, count the outcome here; the final state."""
        cancelled = self._cancelled.pop(job_id, None)
        log_path = job_dir(self.config, job_id) / "worker.log"
        if cancelled is not None:
            settled_here = settle(self.store, job_id, "cancelled", error=cancelled)
        elif code:
            settled_here = settle(self.store, job_id, "failed", error=f"the training process ended with exit code {code}; see {log_path}")
        else:
            settled_here = settle(self.store, job_id, "failed", error=f"the training process ended without a result; see {log_path}")
        row = job_row(self.store, job_id)
        state = row["state"] if row is not None else "failed"
        if not settled_here and cancelled is None:
            count_job(state)  # the worker settled it in its own process: count it in this one's metrics too
        with self._lock:
            if self._running is not None and self._running.job_id == job_id:
                self._running = None
        log.info("training job %d ended: %s", job_id, state)
        return state

    def cancel(self, job_id: int, error: str = "cancelled") -> str:
        """Stop a queued or running job of this runner; its final state."""
        with self._lock:
            row = job_row(self.store, job_id)
            if row is None:
                raise JobNotFound(job_id)
            if row["state"] in FINAL_STATES:
                raise JobFinished(job_id, row["state"])
            started = self._running if self._running is not None and self._running.job_id == job_id else None
            if started is None or started.proc.poll() is not None:
                if pid_alive(row["pid"]):
                    raise JobConflict(job_id)  # another process's job: not ours to stop
                settle(self.store, job_id, "cancelled", error=error)
                return "cancelled"
            self._cancelled[job_id] = error
            _signal_group(started.proc, signal.SIGTERM)
        settle(self.store, job_id, "cancelled", error=error)
        return "cancelled"

    def kill(self, job_id: int) -> None:
        """SIGKILL the worker of ``job_id`` (it did not stop after :meth:`cancel`)."""
        started = self._running
        if started is not None and started.job_id == job_id:
            _signal_group(started.proc, signal.SIGKILL)

    def recover_stale(self) -> None:
        """Jobs left queued/running by a process that no longer exists are settled as failed."""
        active_job(self.store, exclude=self.running_job)
