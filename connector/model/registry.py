"""The model registry: versions in the store, one active version per field, rollback, promotion.

Rows of ``model_versions`` describe every registered model directory (field,
version, path, kind, base model, metrics, data fingerprint, training settings,
creation time); exactly one row per field has ``active = true``.  Every
activation appends a row to ``model_activations`` (with the version it
replaced), which :meth:`ModelRegistry.rollback` walks back.
:class:`~connector.model.serving.ModelReloader` polls the active rows and
hot-swaps the daemon's classifier when they change.

Promotion rule (:meth:`ModelRegistry.promote_if_better`): the active model
(champion) and the new one (challenger) are scored on the same hold-out; the
challenger becomes active when its macro-F1 is not lower than the champion's
by more than ``epsilon`` and gains at least ``min_gain`` — or when forced.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from connector.model.classifier import ModelLoadError
from connector.model.data import LabeledData
from connector.model.settings import CpuPrecision
from connector.model.train import TrainedModel, TrainingRun
from connector.store.db import Store, as_utc, detach, utcnow
from connector.store.tables import ModelActivation, ModelVersion

if TYPE_CHECKING:
    from connector.config import AppConfig

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """A registry operation cannot be done (unknown version, nothing to roll back to, ...).

    ``code`` says what kind, for callers that answer with it (the API):
    ``bad_request``, ``not_found``, ``conflict`` or ``unusable_model``.
    """

    def __init__(self, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One registered model version (a row of ``model_versions``)."""

    field: str
    version: str
    path: Path
    kind: str
    base_model: str | None
    created_at: datetime
    metrics: dict[str, Any]
    data_fingerprint: str | None
    training: dict[str, Any]
    active: bool
    activated_at: datetime | None

    @property
    def macro_f1(self) -> float | None:
        value = self.metrics.get("macro_f1")
        return float(value) if value is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "version": self.version,
            "path": str(self.path),
            "kind": self.kind,
            "base_model": self.base_model,
            "created_at": self.created_at.isoformat(),
            "active": self.active,
            "activated_at": self.activated_at.isoformat() if self.activated_at else None,
            "data_fingerprint": self.data_fingerprint,
            "metrics": {
                k: self.metrics.get(k)
                for k in ("examples", "accuracy", "macro_f1", "recommended_threshold", "recommended_coverage", "linear_baseline")
                if k in self.metrics
            },
        }

    @classmethod
    def from_row(cls, row: ModelVersion) -> ModelInfo:
        return detach(
            cls,
            row,
            path=Path(row.path),
            created_at=as_utc(row.created_at) or utcnow(),
            metrics=dict(row.metrics or {}),
            training=dict(row.training or {}),
            active=bool(row.active),
        )


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """The outcome of champion vs challenger on one hold-out for one field."""

    field: str
    candidate_version: str
    champion_version: str | None
    candidate_macro_f1: float
    champion_macro_f1: float | None
    holdout_examples: int
    promoted: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "candidate_macro_f1": round(self.candidate_macro_f1, 4),
            "champion_macro_f1": None if self.champion_macro_f1 is None else round(self.champion_macro_f1, 4),
        }


ActivatePolicy = Literal["auto", "always", "never"]

#: activations whose reason starts with this are rollbacks (they pop the activation stack)
ROLLBACK_PREFIX = "rollback"


class ModelRegistry:
    """Model versions of one installation: ``store`` holds the rows, ``models_dir`` the directories."""

    def __init__(
        self,
        store: Store,
        models_dir: str | os.PathLike[str],
        *,
        device: str = "cpu",
        max_length: int = 256,
        cpu_precision: CpuPrecision = "auto",
    ) -> None:
        self.store = store
        self.models_dir = Path(models_dir)
        #: device, length and number format used to score models for promotion (as they are served)
        self.device = device
        self.max_length = max_length
        self.cpu_precision = cpu_precision

    @classmethod
    def from_config(cls, config: AppConfig, store: Store) -> ModelRegistry:
        """The installation's registry, scoring models on the device, length and number format they are served with."""
        return cls(
            store, config.models_dir, device=config.model.device, max_length=config.model.max_length,
            cpu_precision=config.model.cpu_precision,
        )

    # ----------------------------------------------------------------- reading

    def list(self, field: str | None = None) -> list[ModelInfo]:
        """Registered versions, per field newest first."""
        with self.store.session() as s:
            q = select(ModelVersion)
            if field is not None:
                q = q.where(ModelVersion.field == field)
            rows = s.scalars(q.order_by(ModelVersion.field, ModelVersion.created_at.desc(), ModelVersion.id.desc())).all()
            return [ModelInfo.from_row(r) for r in rows]

    def get(self, field: str, version: str) -> ModelInfo:
        with self.store.session() as s:
            row = self._row(s, field, version)
            return ModelInfo.from_row(row)

    def active(self) -> dict[str, ModelInfo]:
        """The active version per field."""
        with self.store.session() as s:
            rows = s.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).all()
            return {r.field: ModelInfo.from_row(r) for r in rows}

    def history(self, field: str | None = None) -> list[dict[str, Any]]:
        """Activations, oldest first."""
        with self.store.session() as s:
            q = select(ModelActivation).order_by(ModelActivation.id)
            if field is not None:
                q = q.where(ModelActivation.field == field)
            return [
                {
                    "field": a.field,
                    "version": a.version,
                    "previous_version": a.previous_version,
                    "activated_at": (as_utc(a.activated_at) or utcnow()).isoformat(),
                    "reason": a.reason,
                }
                for a in s.scalars(q).all()
            ]

    # ----------------------------------------------------------------- writing

    def register(self, model: TrainedModel, *, activate: bool = False, reason: str | None = None) -> ModelInfo:
        """Add a trained model directory as a version (inactive unless ``activate``)."""
        if not model.path.is_dir():
            raise RegistryError(f"model directory {model.path} does not exist")
        with self.store.session() as s:
            existing = s.scalars(
                select(ModelVersion).where(ModelVersion.field == model.field, ModelVersion.version == model.version)
            ).first()
            if existing is not None:
                raise RegistryError(f"{model.field} version {model.version} is already registered")
            metrics = dict(model.metrics)
            row = ModelVersion(
                field=model.field,
                version=model.version,
                path=str(model.path.resolve()),
                kind=model.kind,
                base_model=model.base_model,
                created_at=model.created_at,
                metrics=_slim_metrics(metrics),
                data_fingerprint=model.data_fingerprint,
                training=_slim_training(model.training),
                active=False,
            )
            s.add(row)
        log.info("registered %s model %s (macro-F1 %s)", model.field, model.version, model.metrics.get("macro_f1"))
        if activate:
            self.activate(model.version, field=model.field, reason=reason or "registered with activation")
        return self.get(model.field, model.version)

    def activate(
        self, version: str, *, field: str | None = None, reason: str | None = None, verify: bool = True
    ) -> list[ModelInfo]:
        """Make ``version`` the active model of ``field`` (default: of every field that has that version).

        With ``verify`` the directory is loaded first, so a missing or corrupt
        model never becomes active (:class:`ModelLoadError`).
        """
        with self.store.session() as s:
            q = select(ModelVersion).where(ModelVersion.version == version)
            if field is not None:
                q = q.where(ModelVersion.field == field)
            rows = s.scalars(q).all()
            if not rows:
                where = f" for field {field!r}" if field else ""
                raise RegistryError(f"no registered model version {version!r}{where} (see: helpdesk-connector models list)")
            targets = [(r.field, Path(r.path), r.kind) for r in rows]
        if verify:
            for f, path, kind in targets:
                verify_model_dir(path, kind=kind, field=f)
        out = []
        for f, _path, _kind in targets:
            out.append(self._set_active(f, version, reason or "activated"))
        return out

    def _set_active(self, field: str, version: str, reason: str, *, record: bool = True) -> ModelInfo:
        now = utcnow()
        with self.store.session() as s:
            target = self._row(s, field, version)
            current = s.scalars(
                select(ModelVersion).where(ModelVersion.field == field, ModelVersion.active.is_(True))
            ).all()
            previous = None
            for row in current:
                if row.id != target.id:
                    previous = row.version
                    row.active = False
            s.flush()
            already = target.active
            target.active = True
            target.activated_at = now if not already else target.activated_at
            if record and not already:
                s.add(ModelActivation(field=field, version=version, previous_version=previous, activated_at=now, reason=reason))
            info = ModelInfo.from_row(target)
        if not already:
            log.info("activated %s model %s (was %s): %s", field, version, previous or "none", reason)
        return info

    def rollback(self, field: str | None = None, *, reason: str = "rollback") -> list[ModelInfo]:
        """Re-activate, per field (default: every field with an active model), the version active before.

        The activations of a field form a stack: an activation pushes its
        version, a rollback pops one, so repeated rollbacks walk further back
        (v1, v2, v3 → rollback → v2 → rollback → v1).  The earlier version's
        directory must still load; otherwise nothing changes.
        """
        active = self.active()
        fields = [field] if field is not None else sorted(active)
        if not fields:
            raise RegistryError("no active model to roll back")
        plans: list[tuple[str, str]] = []
        with self.store.session() as s:
            for f in fields:
                current = active.get(f)
                if current is None:
                    raise RegistryError(f"field {f!r} has no active model to roll back")
                stack: list[str] = []
                for act in s.scalars(select(ModelActivation).where(ModelActivation.field == f).order_by(ModelActivation.id)):
                    if not act.version:
                        stack.clear()
                    elif (act.reason or "").startswith(ROLLBACK_PREFIX) and len(stack) >= 2 and stack[-2] == act.version:
                        stack.pop()
                    else:
                        stack.append(act.version)
                if len(stack) < 2 or stack[-1] != current.version:
                    raise RegistryError(f"{f}: version {current.version} has no earlier active version to roll back to")
                previous = stack[-2]
                prev_row = s.scalars(
                    select(ModelVersion).where(ModelVersion.field == f, ModelVersion.version == previous)
                ).first()
                if prev_row is None:
                    raise RegistryError(f"{f}: the earlier version {previous} is no longer registered")
                plans.append((f, previous))
        for f, previous in plans:
            info = self.get(f, previous)
            verify_model_dir(info.path, kind=info.kind, field=f)
        text = reason if reason.startswith(ROLLBACK_PREFIX) else f"{ROLLBACK_PREFIX}: {reason}"
        return [self._set_active(f, previous, text) for f, previous in plans]

    def remove(self, field: str, version: str, *, delete_files: bool = True) -> None:
        """Unregister an inactive version (and delete its directory when it lies under ``models_dir``)."""
        with self.store.session() as s:
            row = self._row(s, field, version)
            if row.active:
                raise RegistryError(f"{field} {version} is active; activate another version first")
            path = Path(row.path)
            s.delete(row)
        if delete_files and self._owned(path):
            shutil.rmtree(path, ignore_errors=True)

    def prune(self, keep: int) -> list[ModelInfo]:
        """Keep the newest ``keep`` versions per field (the active one always stays); remove the rest."""
        removed: list[ModelInfo] = []
        by_field: dict[str, list[ModelInfo]] = {}
        for info in self.list():
            by_field.setdefault(info.field, []).append(info)
        for infos in by_field.values():
            kept = 0
            for info in infos:  # newest first
                if info.active:
                    continue
                kept += 1
                if kept + (1 if any(i.active for i in infos) else 0) > keep:
                    self.remove(info.field, info.version)
                    removed.append(info)
        return removed

    # ----------------------------------------------------------------- promotion

    def score(self, path: Path, holdout: LabeledData, field: str, *, kind: str = "transformer") -> float:
        """Macro-F1 of a model directory on the hold-out's ``field``."""
        from connector.model.evaluate import evaluate_predictions

        texts, truth = holdout.for_field(field)
        if not texts:
            raise RegistryError(f"the hold-out has no examples for field {field!r}")
        if kind == "linear":
            from connector.model.baseline import load_linear

            preds = load_linear(path).predict(texts, top_k=1)
        else:
            from connector.model.classifier import FieldModel, resolve_device

            model = FieldModel(
                path, device=resolve_device(self.device), max_length=self.max_length,
                cpu_precision=self.cpu_precision,
            )
            preds = model.predict(texts, top_k=1)
            del model
        return evaluate_predictions(field, truth, [p.label for p in preds]).macro_f1

    def promote_if_better(
        self,
        candidate: TrainedModel | ModelInfo,
        holdout: LabeledData,
        *,
        epsilon: float = 0.005,
        min_gain: float = 0.0,
        force: bool = False,
        reason: str | None = None,
    ) -> PromotionDecision:
        """Score the active model and ``candidate`` on ``holdout``; activate the candidate if it is not worse.

        Registers the candidate first when it is not registered yet.  Promotes
        when there is no active model, when ``force``, or when
        ``candidate_f1 >= champion_f1 - epsilon`` and ``candidate_f1 - champion_f1 >= min_gain``
        (``min_gain`` 0 disables that second condition).
        """
        field = candidate.field
        try:
            self.get(field, candidate.version)
        except RegistryError:
            if isinstance(candidate, TrainedModel):
                self.register(candidate)
            else:
                raise
        champion = self.active().get(field)
        cand_f1 = self.score(candidate.path, holdout, field, kind=candidate.kind)
        n = len(holdout.for_field(field)[0])
        if champion is not None and champion.version == candidate.version:
            return PromotionDecision(field, candidate.version, champion.version, cand_f1, cand_f1, n, False, "already active")
        champ_f1: float | None = None
        if champion is not None:
            try:
                champ_f1 = self.score(champion.path, holdout, field, kind=champion.kind)
            except ModelLoadError as exc:
                log.warning("active %s model %s cannot be scored (%s); treating it as absent", field, champion.version, exc)
        if force:
            ok, why = True, "forced"
        elif champion is None or champ_f1 is None:
            ok, why = True, "no usable active model"
        elif cand_f1 < champ_f1 - epsilon:
            ok, why = False, f"macro-F1 {cand_f1:.4f} is lower than the active {champ_f1:.4f} by more than {epsilon}"
        elif min_gain > 0 and cand_f1 - champ_f1 < min_gain:
            ok, why = False, f"macro-F1 gain {cand_f1 - champ_f1:+.4f} is below the required {min_gain}"
        else:
            ok, why = True, f"macro-F1 {cand_f1:.4f} vs active {champ_f1:.4f} (epsilon {epsilon})"
        if ok:
            self.activate(candidate.version, field=field, reason=reason or f"promoted: {why}")
        else:
            log.info("%s model %s not promoted: %s", field, candidate.version, why)
        return PromotionDecision(
            field, candidate.version, champion.version if champion else None, cand_f1, champ_f1, n, ok, why
        )

    def add_run(
        self,
        run: TrainingRun,
        *,
        activate: ActivatePolicy = "auto",
        epsilon: float = 0.005,
        min_gain: float = 0.0,
        keep: int | None = None,
    ) -> list[PromotionDecision]:
        """Register every model of a training run and apply the activation policy.

        ``auto``: :meth:`promote_if_better` on the run's hold-out; ``always``:
        forced; ``never``: registered only.  ``keep`` prunes old versions.
        """
        decisions: list[PromotionDecision] = []
        for model in run.models.values():
            self.register(model)
            if activate == "never":
                decisions.append(
                    PromotionDecision(model.field, model.version, None, model.macro_f1, None, len(run.holdout), False, "not activated (--no-activate)")
                )
                continue
            decisions.append(
                self.promote_if_better(model, run.holdout, epsilon=epsilon, min_gain=min_gain, force=activate == "always")
            )
        if keep is not None:
            self.prune(keep)
        return decisions

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _row(session: Any, field: str, version: str) -> ModelVersion:
        row = session.scalars(
            select(ModelVersion).where(ModelVersion.field == field, ModelVersion.version == version)
        ).first()
        if row is None:
            raise RegistryError(f"no registered {field} model version {version!r}")
        return row

    def _owned(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.models_dir.resolve())
        except ValueError:
            return False
        return True


def verify_model_dir(path: Path, *, kind: str = "transformer", field: str | None = None, labels: Sequence[str] | None = None) -> None:
    """Load the model once (CPU) to prove it is complete; :class:`ModelLoadError` otherwise."""
    if kind == "linear":
        from connector.model.baseline import load_linear

        load_linear(path)
        return
    import torch

    from connector.model.classifier import FieldModel

    FieldModel(path, device=torch.device("cpu"), expected_labels=labels, cpu_precision="fp32")


def _slim_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics kept in the row: headline figures, per-class scores and the curve (not bulky extras)."""
    keep = ("examples", "accuracy", "macro_f1", "weighted_f1", "recommended_threshold", "recommended_coverage",
            "target_precision", "per_class", "labels", "linear_baseline", "confusion_matrix")
    return {k: metrics[k] for k in keep if k in metrics}


def _slim_training(training: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in training.items() if k != "history"} | {"history": training.get("history", [])[-20:]}
