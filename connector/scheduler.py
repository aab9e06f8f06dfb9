"""Scheduling: one poll job per system, periodic jobs of other areas, per-system health with backoff.

:class:`Scheduler` wraps APScheduler 3's ``AsyncIOScheduler``.  Each system's
poll job never overlaps itself (``max_instances=1``, ``coalesce=True``).
Later areas add their own periodic jobs (export, retraining) with
:meth:`Scheduler.add_job` (any APScheduler trigger, e.g.
``CronTrigger.from_crontab("15 2 * * *")``).

:class:`SystemHealth` follows one system the way Home Assistant's update
coordinator does: it logs once when the system starts failing and once when
it recovers, and while it fails it spaces retries out with exponential
backoff (honouring the helpdesk's Retry-After).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from connector.pipeline import PollResult, describe_error, error_kind

log = logging.getLogger(__name__)


class SystemHealth:
    """Failing/recovered transitions and retry backoff of one system."""

    def __init__(
        self,
        system: str,
        poll_interval: float,
        *,
        initial_backoff: float = 5.0,
        max_backoff: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.system = system
        self.poll_interval = poll_interval
        self.initial_backoff = min(initial_backoff, poll_interval)
        self.max_backoff = max_backoff if max_backoff is not None else max(poll_interval, 300.0)
        self.clock = clock
        self.failing = False
        self.failures = 0
        self.last_error: str | None = None
        self.next_attempt = 0.0
        #: a poll of this system succeeded since the daemon started
        self.ever_ok = False
        #: polling stopped for good (a configuration error only a restart can pick up)
        self.stopped = False

    def due(self) -> bool:
        """Whether a scheduled poll should run now (False while backing off, or once stopped)."""
        return not self.stopped and self.clock() >= self.next_attempt

    def backoff(self, retry_after: float | None = None) -> float:
        delay = min(self.initial_backoff * (2 ** max(self.failures - 1, 0)), self.max_backoff)
        delay *= random.uniform(0.9, 1.1)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff * 4))
        return delay

    def update(self, result: PollResult, *, retrying: bool = True) -> float | None:
        """Take a poll's result; returns the delay before the next attempt when it failed.

        ``retrying=False`` (``run --once``): the failure is logged without announcing a retry.
        """
        if result.error is None:
            if self.failing:
                log.info("%s: recovered after %d failed poll(s); polling again", self.system, self.failures)
            self.ever_ok = True
            self.failing = False
            self.failures = 0
            self.last_error = None
            self.next_attempt = 0.0
            return None
        self.failures += 1
        message = describe_error(result.error)
        delay = self.backoff(result.retry_after)
        if not self.failing:
            log.error(
                "%s: poll failed (%s): %s%s",
                self.system, error_kind(result.error), message,
                f"; retrying with backoff, next try in {delay:.1f} s" if retrying else "",
            )
        elif message != self.last_error:
            log.warning("%s: still failing, now: %s", self.system, message)
        else:
            log.debug("%s: still failing (%d): %s", self.system, self.failures, message)
        self.failing = True
        self.last_error = message
        self.next_attempt = self.clock() + delay
        return delay


class Scheduler:
    """The daemon's APScheduler; one job per system plus any periodic job."""

    def __init__(self) -> None:
        self.scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )

    def add_system(self, system: str, interval: float, func: Callable[..., Any], *, start_now: bool = True) -> str:
        job_id = f"poll:{system}"
        self.scheduler.add_job(
            func,
            IntervalTrigger(seconds=interval),
            args=[system],
            id=job_id,
            name=f"poll {system}",
            next_run_time=datetime.now().astimezone() if start_now else None,
            replace_existing=True,
        )
        return job_id

    def add_job(
        self,
        func: Callable[..., Any],
        trigger: BaseTrigger,
        *,
        id: str,  # noqa: A002 - APScheduler's name
        name: str | None = None,
        run_now: bool = False,
        **kwargs: Any,
    ) -> str:
        """Add a periodic job (coroutine functions run on the event loop, plain functions in threads)."""
        if run_now:
            kwargs["next_run_time"] = datetime.now().astimezone()
        self.scheduler.add_job(func, trigger, id=id, name=name or id, replace_existing=True, **kwargs)
        return id

    def remove(self, job_id: str) -> None:
        """Stop a job for good (nothing happens when there is no such job)."""
        if self.scheduler.get_job(job_id) is not None:
            self.scheduler.remove_job(job_id)

    def retry_in(self, job_id: str, seconds: float) -> None:
        """Run the job again after ``seconds`` instead of waiting for its next interval."""
        job = self.scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now().astimezone() + timedelta(seconds=seconds))

    def job_ids(self) -> list[str]:
        return [job.id for job in self.scheduler.get_jobs()]

    def start(self) -> None:
        self.scheduler.start()

    def pause(self) -> None:
        """Start no more jobs (running ones go on)."""
        if self.scheduler.running:
            self.scheduler.pause()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
