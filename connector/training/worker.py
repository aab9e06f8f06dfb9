"""The one training worker: ``python -m connector.training.worker SPEC.json``.

Lowers its own CPU priority by ``learning.training_nice`` (every kind), holds the training
lock for its whole life (a held lock ends the job ``failed``: :data:`BUSY_LOCK_STATE`), runs the
recipe of the job's kind (:mod:`connector.training.recipes`) and settles its row: ``succeeded``
with the recipe's metrics; ``cancelled`` on SIGTERM (nothing registered or activated); ``failed``
with a one-line error otherwise (the trace goes to ``worker.log`` only).  It lives no longer than
its starter (:class:`~connector.training.parent.ParentWatch`): when that dies the job ends ``failed``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from connector.config import AppConfig, parse_config
from connector.store.db import Store, utcnow
from connector.training.jobs import BUSY_LOCK_ERROR, BUSY_LOCK_STATE, JobSpec, job_row, settle, update_job
from connector.training.lock import training_lock_path
from connector.training.parent import ParentWatch

log = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 0.5


class Cancelled(Exception):
    """The job was cancelled (SIGTERM, the starter gone)."""


@dataclass
class JobContext:
    """What a recipe gets: the job, its configuration and store, the cancel flag, progress reporting."""

    spec: JobSpec
    config: AppConfig
    store: Store
    cancel: threading.Event
    _last: float = field(default=0.0, repr=False)

    @property
    def job_id(self) -> int:
        return self.spec.job_id

    def update(self, **values: Any) -> None:
        update_job(self.store, self.spec.job_id, **values)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Best-effort progress (at most every half second, below 1.0 until the job succeeded)."""
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL_S:
            self._last = now
            values: dict[str, Any] = {"progress": round(max(0.0, min(0.99, fraction)), 3)}
            if message is not None:
                values["metrics"] = {"stage": message[:200]}
            try:
                self.update(**values)
            except Exception:
                log.debug("progress update failed", exc_info=True)
        self.check_cancelled()


def lower_priority(niceness: int) -> None:
    """Add ``learning.training_nice`` to the nice value; leave a core to the API/daemon on small machines."""
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            log.warning("cannot lower the training process's priority")
    try:
        import torch

        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores - 1) if cores > 2 else cores)
    except Exception:
        pass


def run(spec: JobSpec, cancel: threading.Event | None = None) -> int:
    """Run the job of ``spec``; setting ``cancel`` stops it.  The exit code of the process."""
    cancel = cancel or threading.Event()
    parent = ParentWatch(spec.parent_pid, cancel)
    parent.start()
    config = parse_config(spec.config, source=f"training job {spec.job_id}")
    store = Store(config.store_url, apply_migrations=False)
    try:
        row = job_row(store, spec.job_id)
        if row is None or row["state"] != "queued":
            log.error("job %d is not queued (%s); not training", spec.job_id, row and row["state"])
            return 1
        lock = FileLock(str(training_lock_path(config.state_dir)))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            settle(store, spec.job_id, BUSY_LOCK_STATE, error=BUSY_LOCK_ERROR)
            return 1
        try:
            return _run_recipe(JobContext(spec, config, store, cancel), parent)
        finally:
            lock.release()
    finally:
        store.dispose()


def _run_recipe(ctx: JobContext, parent: ParentWatch) -> int:
    from connector.model.train import TrainingCancelled
    from connector.training.recipes import recipe_for

    job_id = ctx.job_id
    ctx.update(state="running", started_at=utcnow(), pid=os.getpid(), progress=0.0)
    try:
        metrics = recipe_for(ctx.spec.kind)(ctx)
        if parent.gone:
            raise Cancelled("cancelled")
    except (Cancelled, TrainingCancelled):
        if parent.gone:
            error = f"interrupted: the process that started it (pid {ctx.spec.parent_pid}) is gone; nothing was registered"
            settle(ctx.store, job_id, "failed", error=error)
            log.error("job %d %s", job_id, error)
            return 1
        settle(ctx.store, job_id, "cancelled", error="cancelled; the active model is unchanged")
        log.info("job %d cancelled", job_id)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the job row
        traceback.print_exc()
        settle(ctx.store, job_id, "failed", error=failure_message(exc))
        log.error("job %d failed: %s", job_id, exc)
        return 1
    settle(ctx.store, job_id, "succeeded", metrics=metrics)
    log.info("job %d (%s) succeeded: version %s", job_id, ctx.spec.kind, metrics.get("version"))
    return 0


def failure_message(exc: BaseException) -> str:
    """One line for the job row: a refusal as it is, anything else with its type."""
    from connector.learning.dataset import NotEnoughData

    message = " ".join(str(exc).split())[:1000]
    if isinstance(exc, NotEnoughData):
        return message
    return f"{type(exc).__name__}: {message or 'no detail'}; the active model is unchanged"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m connector.training.worker SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from connector.logging_setup import quiet_libraries

    quiet_libraries()
    spec = JobSpec.read(Path(argv[0]))
    lower_priority(int(spec.config["learning"]["training_nice"]))
    cancel = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        log.info("signal %d: cancelling training job %d", signum, spec.job_id)
        cancel.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return run(spec, cancel)


if __name__ == "__main__":
    raise SystemExit(main())
