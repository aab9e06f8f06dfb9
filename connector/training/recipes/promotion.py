"""The one promotion rule of every training job.

Models are scored by :meth:`ModelRegistry.promote_if_better` on the registry of
:meth:`ModelRegistry.from_config` (the device, ``model.max_length`` and ``model.cpu_precision``
they are served with) against ``training.promote_epsilon`` and ``training.promote_min_gain``.
"""

from __future__ import annotations

from typing import Any

from connector.config import AppConfig
from connector.model.registry import ModelRegistry
from connector.model.settings import TrainingSettings
from connector.store.db import Store

#: the API's names for the registry's activation policies
ACTIVATION_POLICIES = {"if_better": "auto", "always": "always", "never": "never"}


def registry_for(config: AppConfig, store: Store) -> ModelRegistry:
    return ModelRegistry.from_config(config, store)


def register_and_activate(
    config: AppConfig, store: Store, run: Any, *, mode: str, training: TrainingSettings
) -> dict[str, Any]:
    """Register a finished :class:`~connector.model.train.TrainingRun`; what the activation policy decided per field."""
    decisions = registry_for(config, store).add_run(
        run,
        activate=ACTIVATION_POLICIES.get(mode, "auto"),  # type: ignore[arg-type]
        epsilon=training.promote_epsilon,
        min_gain=training.promote_min_gain,
        keep=training.keep_versions,
    )
    return {d.field: d.as_dict() for d in decisions}
