"""Retention: training examples (and corrections) older than N days are deleted.

An example's age counts from when its ticket was resolved (or, when the
system did not say, from when it was first stored).  ``retention_days: 0``
keeps everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_

from connector.store.db import Store, utcnow
from connector.store.tables import Correction, TrainingExample

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    examples: int
    corrections: int


def apply_retention(store: Store, days: int, *, now: datetime | None = None) -> RetentionResult:
    """Delete examples and corrections older than ``days`` days; returns how many went."""
    if days <= 0:
        return RetentionResult(0, 0)
    cutoff = (now or utcnow()) - timedelta(days=days)
    with store.session() as session:
        examples = session.execute(
            delete(TrainingExample).where(
                or_(
                    TrainingExample.resolved_at < cutoff,
                    and_(TrainingExample.resolved_at.is_(None), TrainingExample.created_at < cutoff),
                )
            )
        ).rowcount
        corrections = session.execute(delete(Correction).where(Correction.detected_at < cutoff)).rowcount
    if examples or corrections:
        log.info("retention (%d days): deleted %d training examples and %d corrections", days, examples, corrections)
    return RetentionResult(int(examples or 0), int(corrections or 0))
