"""Model directories on disk: :class:`TrainedModel` (a version's metadata), version names, atomic saving.

Shared by the transformer training (:mod:`connector.model.train`) and the
linear baseline (:mod:`connector.model.baseline`): both write a versioned
directory ``<output_dir>/<field>/<version>/`` holding their files and
``helpdesk_connector.json``, into a temporary sibling that is renamed into
place at the end, so a reader never sees a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.model.classifier import META_FILE


class TrainingError(Exception):
    """Training could not run (bad base model, no usable data, ...)."""


@dataclass(slots=True)
class TrainedModel:
    """A model directory written by :func:`~connector.model.train.train_field` (or a linear baseline's, ``kind="linear"``)."""

    field: str
    version: str
    path: Path
    labels: list[str]
    base_model: str
    data_fingerprint: str
    created_at: datetime
    #: validation metrics (``FieldEvaluation.as_dict()``)
    metrics: dict[str, Any]
    #: settings used and statistics (epochs run, samples/s, wall time, peak memory, ...)
    training: dict[str, Any]
    kind: str = "transformer"

    @property
    def macro_f1(self) -> float:
        return float(self.metrics.get("macro_f1", 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "created_at": self.created_at.isoformat()}

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> TrainedModel:
        """Read back the metadata of a model directory written by :func:`~connector.model.train.train_field`."""
        from connector.model.classifier import ModelLoadError, read_model_meta

        p = Path(path)
        if not p.is_dir():
            raise ModelLoadError(f"model directory {p} does not exist")
        meta = read_model_meta(p)
        if not meta:
            raise ModelLoadError(f"{p} has no {META_FILE}: not a model written by helpdesk-connector train")
        created = meta.get("created_at")
        return cls(
            field=str(meta.get("field", "")),
            version=str(meta.get("version", p.name)),
            path=p,
            labels=[str(x) for x in meta.get("labels", [])],
            base_model=str(meta.get("base_model", "")),
            data_fingerprint=str(meta.get("data_fingerprint", "")),
            created_at=datetime.fromisoformat(created) if isinstance(created, str) else datetime.now(UTC),
            metrics=dict(meta.get("metrics", {})),
            training=dict(meta.get("training", {})),
            kind=str(meta.get("kind", "transformer")),
        )



def new_version(now: datetime | None = None) -> str:
    """A sortable version name: ``vYYYYMMDD-HHMMSS`` (UTC)."""
    now = now or datetime.now(UTC)
    return now.strftime("v%Y%m%d-%H%M%S")



def write_meta(trained: TrainedModel, directory: Path) -> None:
    meta = trained.as_dict()
    meta.pop("path")
    meta["label2id"] = {label: i for i, label in enumerate(trained.labels)}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything below it the modes a plain ``mkdir``/``open`` would have.

    ``tempfile.mkdtemp`` makes 0700 directories and some writers (safetensors) 0600
    files; both would survive the rename, and a model trained by one user (an admin)
    could not be read by the daemon's user.
    """
    mask = current_umask()
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def save_atomically(trained: TrainedModel, save: Callable[[Path], Any]) -> None:
    """Write into a temporary sibling directory, then rename it to ``trained.path``."""
    final = trained.path
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise TrainingError(f"model directory {final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        save(tmp)
        write_meta(trained, tmp)
        apply_umask(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
