"""The classifier interface the pipeline and the API call, and its transformer implementation.

One Hugging Face model directory per label field (``save_pretrained`` format,
safetensors weights), each also loadable by
``transformers.pipeline("text-classification", model=DIR)``.  Inference is
batched with length sorting and dynamic padding, truncates to the model's
limit, runs on CUDA when present (half precision there), in bf16 on CPUs that
multiply bf16 in hardware, and never touches the network.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import torch
from safetensors import SafetensorError

from connector.model.settings import CpuPrecision

log = logging.getLogger(__name__)

#: metadata file written next to the weights by training
META_FILE = "helpdesk_connector.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelLoadError(Exception):
    """A model directory is missing, corrupt, or does not fit the configuration."""


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class FieldPrediction:
    label: str
    confidence: float
    top_k: tuple[LabelScore, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_k": [{"label": s.label, "confidence": round(s.confidence, 6)} for s in self.top_k],
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    """Per field (``queue``, ``priority``, …) the predicted label and confidence."""

    fields: Mapping[str, FieldPrediction]
    model_version: str

    def as_dict(self) -> dict[str, object]:
        return {name: fp.as_dict() for name, fp in self.fields.items()}


class Classifier(Protocol):
    """What the pipeline and the API need from a model: a batch of texts in, predictions out."""

    @property
    def fields(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    def classify(self, texts: Sequence[str]) -> list[Prediction]: ...


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without CUDA is an error."""
    spec = spec.lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {spec!r} was configured but CUDA is not available")
    return torch.device(spec)


@functools.cache
def cpu_has_bf16_matrix_unit() -> bool:
    """True where the CPU multiplies bf16 matrices in hardware (Intel AMX), so bf16 is several times fp32's speed.

    Read from the kernel's CPU flags (Linux); anywhere else, or where torch's oneDNN is missing, False.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_precision(device: torch.device, *, half_precision: bool = True, cpu_precision: CpuPrecision = "auto") -> str:
    """The number format a model runs in on ``device``: ``fp16``/``bf16``/``fp32`` on CUDA, ``fp32``/``bf16``/``int8`` on a CPU."""
    if device.type == "cuda":
        return "fp16" if half_precision else "fp32"
    if device.type != "cpu":
        return "fp32"
    if cpu_precision == "auto":
        return "bf16" if cpu_has_bf16_matrix_unit() else "fp32"
    return cpu_precision


def read_model_meta(model_dir: Path) -> dict[str, object]:
    path = model_dir / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable model metadata ({exc})") from exc


class FieldModel:
    """One fine-tuned sequence-classification model for one label field."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        device: torch.device,
        max_length: int = 256,
        half_precision: bool = True,
        expected_labels: Sequence[str] | None = None,
        cpu_precision: CpuPrecision = "auto",
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = Path(model_dir)
        if not self.path.is_dir():
            raise ModelLoadError(f"model directory {self.path} does not exist")
        if not (self.path / "model.safetensors").is_file() and not any(self.path.glob("model-*.safetensors")):
            raise ModelLoadError(f"model directory {self.path} has no safetensors weights")
        self.meta = read_model_meta(self.path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(
                self.path, local_files_only=True, trust_remote_code=False, use_safetensors=True
            )
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            raise ModelLoadError(f"cannot load model from {self.path}: {exc}") from exc
        id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        if len(id2label) != model.config.num_labels:
            raise ModelLoadError(f"{self.path}: config has {model.config.num_labels} labels but id2label has {len(id2label)}")
        self.labels = [id2label[i] for i in range(model.config.num_labels)]
        meta_labels = self.meta.get("labels")
        if isinstance(meta_labels, list) and [str(x) for x in meta_labels] != self.labels:
            raise ModelLoadError(
                f"{self.path}: the model has {len(self.labels)} labels {self.labels} but its {META_FILE} "
                f"lists {len(meta_labels)}: {meta_labels}"
            )
        if expected_labels is not None and set(expected_labels) != set(self.labels):
            raise ModelLoadError(f"{self.path}: labels {sorted(self.labels)} do not match expected {sorted(expected_labels)}")
        self.device = device
        self.precision = resolve_precision(device, half_precision=half_precision, cpu_precision=cpu_precision)
        self.half = self.precision == "fp16"
        self.int8 = self.precision == "int8"
        model.eval()
        if self.half:
            model.half()
        elif self.precision == "bf16":
            # on a CPU with AMX, bf16 matrix products run several times faster than fp32; labels and
            # confidences stay within rounding of fp32's (see BENCHMARKS.md)
            model.to(torch.bfloat16)
        elif self.int8:
            # dynamic int8 quantisation of the linear layers: about 2x faster on a CPU; labels and confidences
            # shift a little (sample data: 97.6 % same label, accuracy -1.4 points; see BENCHMARKS.md)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model.to(device)
        model_limit = getattr(self.tokenizer, "model_max_length", None) or max_length
        position_limit = getattr(model.config, "max_position_embeddings", None) or max_length
        self.max_length = int(min(max_length, model_limit, position_limit))
        self.version = str(self.meta.get("version") or self.path.name)

    @torch.inference_mode()
    def predict(self, texts: Sequence[str], *, batch_size: int = 32, top_k: int = 3) -> list[FieldPrediction]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)
        ids = encoded["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        results: list[FieldPrediction | None] = [None] * len(ids)
        k = min(top_k, len(self.labels))
        keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
        # on a CPU, cap the padded tokens per batch: long tickets go in smaller batches, so little
        # compute is spent on padding (a GPU prefers full batches)
        per_row = CPU_TOKENS_PER_ROW_BF16 if self.precision == "bf16" else CPU_TOKENS_PER_ROW
        budget = None if self.device.type == "cuda" else batch_size * per_row
        for chunk in _length_batches(order, [len(x) for x in ids], batch_size, budget):
            batch = self.tokenizer.pad(
                {key: [encoded[key][i] for i in chunk] for key in keys}, padding=True, return_tensors="pt"
            )
            batch = {key: value.to(self.device) for key, value in batch.items()}
            logits = self.model(**batch).logits.float()
            probs = torch.softmax(logits, dim=-1).cpu()
            top_p, top_i = probs.topk(k, dim=-1)
            for row, index in enumerate(chunk):
                scores = tuple(
                    LabelScore(self.labels[int(i)], float(p)) for p, i in zip(top_p[row].tolist(), top_i[row].tolist())
                )
                results[index] = FieldPrediction(scores[0].label, scores[0].confidence, scores)
        return [r for r in results if r is not None]


#: padded tokens per batch row budgeted on a CPU (batch_size x this is the batch's token budget)
CPU_TOKENS_PER_ROW = 64
#: the same for bf16 on AMX, whose matrix unit wants larger products (2,000 shared-data texts, 2 threads:
#: 634 texts/s at 128 against 567 at 64; fp32 is within noise of both)
CPU_TOKENS_PER_ROW_BF16 = 128


def _length_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int, budget: int | None) -> list[list[int]]:
    """Split indices sorted by ascending length into batches of at most ``batch_size`` rows.

    With a ``budget``: also at most that many padded tokens per batch, and no row more than half as
    long again as the batch's shortest (little padding).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        length = lengths[index]
        full = len(current) >= batch_size
        if budget is not None and current:
            full = full or (len(current) + 1) * length > budget or length > 1.5 * lengths[current[0]] + 8
        if current and full:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


_Model = TypeVar("_Model")


class PerFieldClassifier(Generic[_Model]):
    """A classifier over one model per field: each model labels every text for its field."""

    def __init__(self, models: Mapping[str, _Model], *, top_k: int = 3) -> None:
        if not models:
            raise ModelLoadError("no model configured for any field")
        self.models = dict(models)
        self.top_k = top_k

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def version(self) -> str:
        raise NotImplementedError

    def predict_field(self, model: _Model, texts: Sequence[str]) -> list[FieldPrediction]:
        """The ``top_k`` labels of one field's model for each text."""
        raise NotImplementedError

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        per_field = {field: self.predict_field(model, texts) for field, model in self.models.items()}
        version = self.version
        return [
            Prediction({field: preds[i] for field, preds in per_field.items()}, version) for i in range(len(texts))
        ]


class TransformerClassifier(PerFieldClassifier[FieldModel]):
    """Classifier over one :class:`FieldModel` per field."""

    def __init__(self, models: Mapping[str, FieldModel], *, batch_size: int = 32, top_k: int = 3) -> None:
        super().__init__(models, top_k=top_k)
        self.batch_size = batch_size

    @classmethod
    def from_dirs(
        cls,
        dirs: Mapping[str, str | os.PathLike[str]],
        *,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 256,
        top_k: int = 3,
        half_precision: bool = True,
        cpu_precision: CpuPrecision = "auto",
    ) -> TransformerClassifier:
        torch_device = resolve_device(device)
        models = {
            field: FieldModel(
                path, device=torch_device, max_length=max_length, half_precision=half_precision, cpu_precision=cpu_precision
            )
            for field, path in dirs.items()
        }
        log.info(
            "loaded models %s on %s (%s)",
            ", ".join(f"{f}={m.version}" for f, m in models.items()),
            torch_device,
            ", ".join(sorted({m.precision for m in models.values()})),
        )
        return cls(models, batch_size=batch_size, top_k=top_k)

    @property
    def version(self) -> str:
        return ",".join(f"{field}={model.version}" for field, model in self.models.items())

    @property
    def runtime(self) -> str:
        """Where and in which number format the models run, e.g. ``cpu, bf16`` or ``cuda:0, fp16``."""
        devices = sorted({str(m.device) for m in self.models.values()})
        precisions = sorted({m.precision for m in self.models.values()})
        return ", ".join([*devices, *precisions])

    def predict_field(self, model: FieldModel, texts: Sequence[str]) -> list[FieldPrediction]:
        return model.predict(texts, batch_size=self.batch_size, top_k=self.top_k)


class ClassifierHolder:
    """The classifier in service, swappable while the daemon runs.

    A batch takes ``holder.current`` once and keeps that reference, so a swap
    never changes the model under a batch in flight; the old model is freed
    when the last batch using it drops its reference.
    """

    def __init__(self, classifier: Classifier | None = None) -> None:
        self._classifier = classifier
        self._lock = threading.Lock()

    @property
    def current(self) -> Classifier:
        classifier = self._classifier
        if classifier is None:
            raise ModelLoadError("no model is loaded: train one (helpdesk-connector train) or set model.paths")
        return classifier

    @property
    def loaded(self) -> bool:
        return self._classifier is not None

    def swap(self, classifier: Classifier) -> Classifier | None:
        with self._lock:
            old, self._classifier = self._classifier, classifier
        if old is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return old
