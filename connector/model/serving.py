"""Which models are in service, and switching to new ones without a restart.

The daemon and the API load the active version of each field (from the
registry in the store, or from ``model.paths`` when set) and poll the registry
for changes; a change loads the new models first, then swaps them in
(:class:`~connector.model.classifier.ClassifierHolder`).  The versions in
service are published here, and only here (:func:`publish_active_models`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import select

from connector import metrics
from connector.config import AppConfig
from connector.model.classifier import Classifier, ClassifierHolder, ModelLoadError, TransformerClassifier
from connector.store.db import Store
from connector.store.tables import ModelVersion

log = logging.getLogger(__name__)


def active_model_dirs(config: AppConfig, store: Store) -> dict[str, Path]:
    """Per configured field, the directory of the model to serve."""
    dirs: dict[str, Path] = {}
    missing: list[str] = []
    with store.session() as session:
        rows = session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).all()
        active = {row.field: Path(row.path) for row in rows}
    for field in config.model.fields:
        if field in config.model.paths:
            dirs[field] = config.model.paths[field]
        elif field in active:
            dirs[field] = active[field]
        else:
            missing.append(field)
    if missing and not dirs:
        raise ModelLoadError(
            f"no active model for {', '.join(missing)}: train one (helpdesk-connector train) or set model.paths"
        )
    if missing:
        log.warning("no active model for %s; those fields are not predicted", ", ".join(missing))
    return dirs


def load_classifier(config: AppConfig, store: Store, dirs: dict[str, Path] | None = None) -> TransformerClassifier:
    """The classifier over the active models (or over ``dirs`` when given)."""
    return TransformerClassifier.from_dirs(
        dirs if dirs is not None else active_model_dirs(config, store),
        device=config.model.device,
        batch_size=config.model.batch_size,
        max_length=config.model.max_length,
        top_k=config.model.top_k,
        half_precision=config.model.half_precision,
        cpu_precision=config.model.cpu_precision,
    )


def active_versions(classifier: Classifier) -> dict[str, str]:
    """``{field: version}`` of a classifier (for the active-model metric and ``status``)."""
    models = getattr(classifier, "models", None)
    if isinstance(models, Mapping):
        return {field: str(getattr(model, "version", "?")) for field, model in models.items()}
    out = {}
    for part in classifier.version.split(","):
        field, sep, version = part.partition("=")
        if sep:
            out[field] = version
    return out or {field: classifier.version for field in classifier.fields}


def publish_active_models(holder: ClassifierHolder) -> None:
    """Set the ``active_model_info`` metric to the versions ``holder`` serves (none when it has no model)."""
    metrics.set_active_models(active_versions(holder.current) if holder.loaded else {})


class ModelReloader:
    """Swaps in newly activated models; call :meth:`check` periodically.

    A problem (no active model, a model that does not load) is logged once
    when it appears and once when it is gone, not on every check.
    """

    def __init__(self, config: AppConfig, store: Store, holder: ClassifierHolder) -> None:
        self.config = config
        self.store = store
        self.holder = holder
        self._dirs: dict[str, Path] | None = None
        self._problem: str | None = None

    def load_initial(self) -> None:
        self._dirs = active_model_dirs(self.config, self.store)
        self.holder.swap(load_classifier(self.config, self.store, self._dirs))
        publish_active_models(self.holder)

    def _report(self, problem: str | None, level: int = logging.WARNING) -> None:
        if problem != self._problem:
            if problem is not None:
                log.log(level, "%s", problem)
            elif self._problem is not None:
                log.info("model problem resolved")
        self._problem = problem

    def check(self) -> bool:
        """Load and swap in the active models if they changed; True when swapped."""
        try:
            dirs = active_model_dirs(self.config, self.store)
        except ModelLoadError as exc:
            self._report(f"model check: {exc}")
            return False
        if dirs == self._dirs and self.holder.loaded:
            self._report(None)
            return False
        try:
            classifier = load_classifier(self.config, self.store, dirs)
        except ModelLoadError as exc:
            self._report(f"new active model cannot be loaded, keeping the current one: {exc}", logging.ERROR)
            return False
        self._report(None)
        old = self.holder.swap(classifier)
        self._dirs = dirs
        publish_active_models(self.holder)
        log.info("now serving models %s (was %s)", classifier.version, old.version if old else "none")
        return True
