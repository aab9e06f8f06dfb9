"""The training process of an API job: ``python -m connector.api.train_worker SPEC.json``.

Runs at a lower CPU priority (``os.nice``) than the API and the daemon.
Loads the stored dataset, trains the requested fields with
:func:`connector.model.train.train_models`, writes progress into the job's
``training_jobs`` row (at most every half second), registers the new models
and activates them as the request asked (``if_better``: the registry's
promotion rule; ``always``; ``never``).  SIGTERM cancels cleanly: training
stops, nothing is registered, the job ends ``cancelled``.  Any failure ends it
``failed`` with a one-line error (the full trace goes to the job's log only).
The worker lives no longer than the process that started it (:class:`ParentWatch`): when the server dies,
even by ``kill -9``, training stops without registering anything and the job ends ``failed``.
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


class ParentWatch:
    """Ties the worker's life to the process that started it (the API server or the daemon).

    On Linux the kernel signals the worker when that process dies (``prctl(PR_SET_PDEATHSIG)``, even after a
    ``kill -9``); everywhere a thread also checks the parent pid every second.  Either way the training is
    cancelled, nothing is registered or activated, and the job ends ``failed`` saying the starter is gone.
    The death signal is SIGUSR1, not SIGTERM: the kernel also sends it when the *thread* that started the
    worker ends while its process lives on, so the handler acts only when the parent pid really changed.
    """

    def __init__(self, parent_pid: int | None, cancel: threading.Event, interval: float = 1.0) -> None:
        self.parent_pid = parent_pid
        self.cancel = cancel
        self.interval = interval

    @property
    def gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def start(self) -> None:
        if self.parent_pid is None:
            return
        if threading.current_thread() is threading.main_thread():
            signal.signal(_DEATH_SIGNAL, self._on_death_signal)
            _set_parent_death_signal(_DEATH_SIGNAL)
        if self.gone:  # it died before the signal was armed
            self.cancel.set()
            return
        threading.Thread(target=self._watch, name="parent-watch", daemon=True).start()

    def _on_death_signal(self, _signum: int, _frame: object) -> None:
        if self.gone:
            self.cancel.set()

    def _watch(self) -> None:
        while not self.cancel.wait(self.interval):
            if self.gone:
                log.warning("the process that started this training (pid %s) is gone: stopping", self.parent_pid)
                self.cancel.set()
                return


def _set_parent_death_signal(signum: int) -> None:
    """Linux: have the kernel send ``signum`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); the parent pid is still watched", ctypes.get_errno())
    except (OSError, AttributeError):
        log.warning("prctl is not available; the parent pid is still watched")


_PR_SET_PDEATHSIG = 1
_DEATH_SIGNAL = signal.SIGUSR1


def run(spec: JobSpec, cancel: threading.Event | None = None) -> int:
    """Train the job of ``spec``; setting ``cancel`` stops it.  The exit code of the process."""
    from connector.model.train import TrainingCancelled, train_models

    cancel = cancel or threading.Event()
    parent = ParentWatch(spec.parent_pid, cancel)
    parent.start()
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
        if cancel.is_set() or parent.gone:
            raise TrainingCancelled("cancelled")
        metrics: dict[str, Any] = result.as_dict()
        metrics["activation"] = _register(store, spec, result, training, model_settings.device)
        job.update(state="succeeded", progress=1.0, metrics=metrics, finished_at=utcnow(), error=None)
        log.info("job %d succeeded: version %s", spec.job_id, result.version)
        return 0
    except TrainingCancelled:
        if parent.gone:
            error = f"interrupted: the process that started it (pid {spec.parent_pid}) is gone; nothing was registered"
            job.update(state="failed", error=error, finished_at=utcnow())
            log.error("job %d %s", spec.job_id, error)
            return 1
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
    from connector.api.model_admin import register_and_activate

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
