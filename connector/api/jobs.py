"""The API's front end over the one training runner (:mod:`connector.training`).

:meth:`TrainingJobRunner.start` starts an ``api`` job on the shared
:class:`~connector.training.runner.TrainingRunner` and watches its process in a task:
when it ends the row is settled (if the worker could not) and the API swaps in newly
activated models (``on_finished``).  One training at a time: a second start while a job
is queued or running — here or in another process such as the learning loop — raises
:class:`JobConflict`.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable

from connector.config import AppConfig
from connector.store.db import Store
from connector.training.jobs import JobConflict, JobFinished, JobNotFound, JobSpec, job_dir, settle
from connector.training.runner import TrainingRunner

__all__ = ["JobConflict", "JobFinished", "JobNotFound", "JobSpec", "TrainingJobRunner", "job_dir"]

log = logging.getLogger(__name__)

JOB_KIND = "api"


class TrainingJobRunner:
    """Starts, watches and cancels the API's training jobs (one at a time)."""

    def __init__(
        self,
        config: AppConfig,
        store: Store,
        *,
        on_finished: Callable[[], Awaitable[object]] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.runner = TrainingRunner(config, store, python=python)
        self.on_finished = on_finished
        #: jobs of this runner not yet settled: process alive, or new models not yet swapped in
        self._unsettled: set[int] = set()
        #: per job of this runner: the task that watches its process and swaps in its models
        self._watchers: dict[int, asyncio.Task[None]] = {}

    def is_settling(self, job_id: int) -> bool:
        """True until the job's process ended and its models (if any) are in service."""
        return job_id in self._unsettled

    @property
    def running_job(self) -> int | None:
        return self.runner.running_job

    def recover_stale(self) -> None:
        """At start: jobs left queued/running by a process that no longer exists are marked failed."""
        self.runner.recover_stale()

    async def start(
        self,
        *,
        dataset_id: int,
        fields: list[str],
        base_model: str | None,
        epochs: int | None,
        activate: str,
        trigger: str = "api",
    ) -> int:
        """Start a training job; its id at once.  Raises JobConflict while one is queued or running."""
        params = {"fields": fields, "base_model": base_model, "epochs": epochs, "activate": activate}
        started = await asyncio.to_thread(self.runner.start, JOB_KIND, trigger=trigger, params=params, dataset_id=dataset_id)
        job_id = started.job_id
        self._unsettled.add(job_id)
        self._watchers[job_id] = asyncio.create_task(self._watch(started.proc, job_id), name=f"training-job-{job_id}")
        return job_id

    async def wait_settled(self, job_id: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the job of this runner ended and its models are in service."""
        watcher = self._watchers.get(job_id)
        if watcher is None:
            return not self.is_settling(job_id)
        done, _pending = await asyncio.wait({watcher}, timeout=timeout)
        return bool(done)

    async def _watch(self, proc: subprocess.Popen[bytes], job_id: int) -> None:
        code = await asyncio.to_thread(proc.wait)
        state = await asyncio.to_thread(self.runner.finish, job_id, code)
        try:
            if state == "succeeded" and self.on_finished is not None:
                await self.on_finished()
        except Exception:
            log.exception("swapping in the models of training job %d failed", job_id)
        finally:
            self._unsettled.discard(job_id)
            self._watchers.pop(job_id, None)

    async def cancel(self, job_id: int) -> str:
        """Stop a queued or running job of this process; its final state."""
        return await asyncio.to_thread(self.runner.cancel, job_id)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop a running job (the server is going away) and wait briefly for its process."""
        job_id = self.runner.running_job
        if job_id is not None:
            log.warning("stopping training job %d: the API is shutting down", job_id)
            await asyncio.to_thread(self.runner.cancel, job_id, "the API shut down")
            watcher = self._watchers.get(job_id)
            if watcher is not None:
                done, _pending = await asyncio.wait({watcher}, timeout=timeout)
                if not done:
                    self.runner.kill(job_id)
            await asyncio.to_thread(settle, self.runner.store, job_id, "cancelled", error="the API shut down")
        for watcher in list(self._watchers.values()):
            if not watcher.done():
                watcher.cancel()
