"""One turn of the learning loop, as the daemon's schedule runs it.

export every system into the store -> retention -> metrics -> retrain when at
least ``retrain_min_new_examples`` new examples (or corrections) arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from adapters.base import Adapter
from connector.config import AppConfig
from connector.learning.corrections import CorrectionFound, automatic_share, override_rates
from connector.learning.export import Exporter, ExportStats, make_adapter
from connector.learning.retention import RetentionResult, apply_retention
from connector.learning.retrain import RetrainBusy, RetrainResult, retrain, should_retrain
from connector.store.db import Store

log = logging.getLogger(__name__)


def count_correction(correction: CorrectionFound) -> None:
    """The ``corrections`` counter of the metrics, per system and field."""
    from connector import metrics

    metrics.CORRECTIONS.labels(system=correction.system, field=correction.field).inc()


def publish_rates(store: Store) -> None:
    """Set the override-rate and automatic-share gauges from the store."""
    from connector import metrics

    with store.session() as session:
        rates = override_rates(session)
        shares = automatic_share(session)
    for r in rates:
        metrics.OVERRIDE_RATE.labels(system=r.system, field=r.field, value=r.value).set(r.rate)
    for system, s in shares.items():
        metrics.AUTOMATIC_SHARE.labels(system=system).set(s["share"])


@dataclass
class CycleResult:
    exports: list[ExportStats] = field(default_factory=list)
    retention: RetentionResult | None = None
    retrain_reason: str = ""
    retrained: RetrainResult | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "exports": [e.as_dict() for e in self.exports],
            "retention": None if self.retention is None else asdict(self.retention),
            "retrain_reason": self.retrain_reason,
            "retrained": None if self.retrained is None else self.retrained.as_dict(),
        }


async def run_cycle(
    config: AppConfig,
    store: Store,
    *,
    adapter_factory: Callable[[AppConfig, str], Adapter] = make_adapter,
    allow_retrain: bool = True,
    trigger: str = "schedule",
    should_stop: Callable[[], bool] | None = None,
) -> CycleResult:
    result = CycleResult()
    exporter = Exporter(config, store, adapter_factory=adapter_factory, on_correction=count_correction)
    result.exports = await exporter.export_all()
    result.retention = await asyncio.to_thread(apply_retention, store, config.learning.privacy.retention_days)
    await asyncio.to_thread(publish_rates, store)
    due, reason = await asyncio.to_thread(should_retrain, config, store)
    result.retrain_reason = reason
    if not (allow_retrain and due):
        log.info("learning loop: no retraining: %s", reason)
        return result
    log.info("learning loop: retraining: %s", reason)
    try:
        result.retrained = await asyncio.to_thread(retrain, config, store, trigger=trigger, should_stop=should_stop)
    except RetrainBusy as exc:
        log.info("learning loop: %s; retraining next time", exc)
    return result
