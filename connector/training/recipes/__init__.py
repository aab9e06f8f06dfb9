"""What a training worker does, per job kind: ``api`` (train an uploaded dataset) and ``retrain``
(the learning loop's champion/challenger retraining).  A recipe takes the worker's
:class:`~connector.training.worker.JobContext` and returns the job's metrics (raises on failure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.training.worker import JobContext

Recipe = Callable[["JobContext"], dict[str, Any]]


def recipe_for(kind: str) -> Recipe:
    if kind == "api":
        from connector.training.recipes.api import train_dataset

        return train_dataset
    if kind == "retrain":
        from connector.training.recipes.retrain import retrain_champion

        return retrain_champion
    raise ValueError(f"unknown training job kind {kind!r}")
