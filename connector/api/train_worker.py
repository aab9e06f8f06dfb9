"""The training process of an API job: ``python -m connector.api.train_worker SPEC.json``.

Runs at a lower CPU priority (``os.nice``) than the API and the daemon.
Loads the stored dataset, trains the requested fields with
:func:`connector.model.train.train_models`, writes progress into the job's
``training_jobs`` row (at most every half second), registers the new models
and activates them as the request asked (``if_better``: the registry's
promotion rule; ``always``; ``never``).  SIGTERM cancels cleanly: training
stops, nothing is registered, the job ends ``cancelled``.  Any failure ends it
``failed`` with a one-line error (the full trace goes to the job's log only).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from connector.api.datasets import load_dataset
from connector.api.jobs import JobSpec
from connector.model.settings import ModelSettings, TrainingSettings
from connector.store.db import Store, utcnow
from connector.store.tables import TrainingJob
from connector.training_lock import training_lock_path

log = logging.getLogger("connector.api.train_worker")

#: added to the process's nice value (lower priority than routing and serving)
NICE_INCREMENT = 10
_PROGRESS_INTERVAL_S = 0.5


class _Job:
    """Writes the job's row."""

    def __init__(self, store: Store, job_id: int) -> None:
        self.store = store
        self.job_id = job_id
        self._last = 0.0

    def update(self, **values: Any) -> None:
        with self.store.session() as session:
            job = session.get(TrainingJob, self.job_id)
            if job is None:
                raise SystemExit(f"training job {self.job_id} does not exist")
            if job.state in ("succeeded", "failed", "cancelled") and "state" not in values:
                return
            for key, value in values.items():
                setattr(job, key, value)

    def state(self) -> str | None:
        with self.store.session() as session:
            job = session.get(TrainingJob, self.job_id)
            return job.state if job else None

    def progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last < _PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        self._last = now
        try:
            self.update(progress=max(0.0, min(0.99, fraction)), metrics={"stage": message[:200]})
        except Exception:  # progress is best effort
            log.debug("progress update failed", exc_info=True)


def _lower_priority() -> None:
    try:
        os.nice(NICE_INCREMENT)
    except OSError:
        log.warning("cannot lower the training process's priority")
    try:
        import torch

        # leave a core to the API/daemon on small machines
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores - 1) if cores > 2 else cores)
    except Exception:
        pass


def run(spec: JobSpec, cancel: threading.Event | None = None) -> int:
    """Train the job of ``spec``; setting ``cancel`` stops it.  The exit code of the process."""
    from connector.model.train import TrainingCancelled, train_models

    cancel = cancel or threading.Event()
    store = Store(spec.store_url, apply_migrations=False)
    job = _Job(store, spec.job_id)
    if job.state() != "queued":
        log.error("job %d is not queued (state %s); not training", spec.job_id, job.state())
        return 1
    lock = FileLock(str(training_lock_path(spec.state_dir)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        job.update(state="failed", error="another training is running (training lock held)", finished_at=utcnow())
        return 1
    job.update(state="running", started_at=utcnow(), pid=os.getpid(), progress=0.0)
    try:
        model_settings = ModelSettings.model_validate(spec.model)
        training = TrainingSettings.model_validate(spec.training)
        if spec.epochs is not None:
            training = training.model_copy(update={"epochs": spec.epochs})
        data = load_dataset(spec.dataset_path, spec.fields, min_examples_per_class=training.min_examples_per_class)
        job.progress(0.0, f"loaded {len(data)} examples")
        result = train_models(
            data,
            spec.fields,
            output_dir=spec.models_dir,
            settings=training,
            base_model=spec.base_model or model_settings.base_model,
            device=model_settings.device,
            progress=job.progress,
            cancel=cancel,
            half_precision=model_settings.half_precision,
            show_progress=False,
        )
        if cancel.is_set():
            raise TrainingCancelled("cancelled")
        metrics: dict[str, Any] = result.as_dict()
        metrics["activation"] = _register(store, spec, result, training, model_settings.device)
        job.update(state="succeeded", progress=1.0, metrics=metrics, finished_at=utcnow(), error=None)
        log.info("job %d succeeded: version %s", spec.job_id, result.version)
        return 0
    except TrainingCancelled:
        job.update(state="cancelled", error="cancelled", finished_at=utcnow())
        log.info("job %d cancelled", spec.job_id)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the job row
        traceback.print_exc()
        message = " ".join(str(exc).split())[:1000] or type(exc).__name__
        try:
            job.update(state="failed", error=f"{type(exc).__name__}: {message}", finished_at=utcnow())
        finally:
            log.error("job %d failed: %s", spec.job_id, message)
        return 1
    finally:
        lock.release()
        store.dispose()


def _register(store: Store, spec: JobSpec, result: Any, training: TrainingSettings, device: str) -> dict[str, Any]:
    """Register the run's models and activate them as requested; what happened per field."""
    from connector.api.models import register_and_activate

    return register_and_activate(
        store, result, mode=spec.activate, training=training, models_dir=spec.models_dir, device=device
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m connector.api.train_worker SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from connector.logging_setup import quiet_libraries

    quiet_libraries()
    _lower_priority()
    spec = JobSpec.read(Path(argv[0]))
    cancel = threading.Event()

    def on_term(_signum: int, _frame: object) -> None:
        cancel.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return run(spec, cancel)


if __name__ == "__main__":
    raise SystemExit(main())
