"""The learning loop's periodic job in the running daemon.

Registered through ``connector.daemon.JOB_PROVIDERS`` when
``learning.enabled``: on ``learning.export_cron`` (UTC) it runs one
:func:`~connector.learning.cycle.run_cycle` — export, retention, metrics,
retraining when due.  Training runs in a separate, nicer process; this job
only waits for it in a worker thread, so polling goes on.  A promoted model
is swapped in right after (and by the daemon's regular model check anyway).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from apscheduler.triggers.cron import CronTrigger

from connector.learning.cycle import run_cycle

if TYPE_CHECKING:
    from connector.daemon import Daemon

log = logging.getLogger(__name__)

JOB_ID = "learning-loop"


async def learning_job(daemon: Daemon) -> None:
    if daemon.store is None or daemon.stop_event.is_set():
        return
    try:
        result = await run_cycle(daemon.config, daemon.store, should_stop=daemon.stop_event.is_set)
    except Exception:
        log.exception("learning loop failed; it runs again at the next scheduled time")
        return
    if result.retrained is not None and any(result.retrained.promoted.values()):
        await daemon.check_models()


def register_jobs(daemon: Daemon) -> None:
    learning = daemon.config.learning
    if not learning.enabled:
        return
    trigger = CronTrigger.from_crontab(learning.export_cron, timezone="UTC")
    daemon.add_job(learning_job, trigger, id=JOB_ID, args=[daemon], name="learning loop: export and retrain")
    log.info("learning loop scheduled (%s UTC)", learning.export_cron)
