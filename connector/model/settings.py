"""Configuration of the classifier and of training (the ``model`` and ``training`` sections)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


def auto_or_int(low: int, high: int) -> Any:
    """A setting that is ``auto`` or a whole number from ``low`` to ``high``, with one clear error otherwise."""

    def check(value: object) -> object:
        if value == "auto":
            return value
        try:
            number = int(str(value))
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"must be 'auto' or a number from {low} to {high}")
        return number

    return Annotated[int | Literal["auto"], BeforeValidator(check)]


#: number format of inference on a CPU (``model.cpu_precision``)
CpuPrecision = Literal["auto", "fp32", "bf16", "int8"]
#: torch threads per forward pass, or ``auto``
ThreadCount = auto_or_int(1, 256)
#: forward passes at once, or ``auto``
WorkerCount = auto_or_int(1, 32)


class ModelSettings(BaseModel):
    """Which models the daemon serves, and how it runs them."""

    model_config = ConfigDict(extra="forbid")

    #: where trained model versions are stored (default: ``<state_dir>/models``)
    dir: Path | None = None
    #: label fields the models predict; routing reads ``queue`` and ``priority``
    fields: list[str] = Field(default_factory=lambda: ["queue", "priority"], min_length=1)
    #: explicit model directory per field; overrides the registry's active version
    paths: dict[str, Path] = Field(default_factory=dict)
    #: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda:N``
    device: str = "auto"
    batch_size: int = Field(32, ge=1, le=1024)
    #: tokens per text; the model's own limit caps it
    max_length: int = Field(256, ge=8, le=8192)
    top_k: int = Field(3, ge=1, le=50)
    #: base model directory for fine-tuning (default: the all-MiniLM-L6-v2 shipped on PyPI)
    base_model: Path | None = None
    #: mixed precision: fp16 inference and bf16/fp16 autocast training on a GPU, bf16 autocast training on
    #: a CPU with AMX (inference on a CPU: ``cpu_precision``)
    half_precision: bool = True
    #: number format on a CPU: ``auto`` (bf16 where the CPU multiplies bf16 in hardware, i.e. has AMX;
    #: else fp32), ``fp32``, ``bf16``, or ``int8`` (linear layers quantised at load time)
    cpu_precision: CpuPrecision = "auto"
    #: torch threads per forward pass on a CPU; ``auto``: the usable cores shared out among the passes that
    #: may run at once (``api.micro_batch_workers`` where the process serves the API, else one pass)
    cpu_threads: ThreadCount = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


class TrainingSettings(BaseModel):
    """Defaults for fine-tuning and for the promotion rule."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(4, ge=1, le=100)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    batch_size: int = Field(16, ge=1, le=1024)
    max_length: int = Field(128, ge=8, le=8192)
    seed: int = 42
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    #: stop after this many epochs without a better validation macro-F1
    early_stopping_patience: int = Field(2, ge=0)
    class_weights: bool = True
    min_examples_per_class: int = Field(2, ge=1)
    #: a new model is promoted unless its macro-F1 is lower than the active one's by more than this
    promote_epsilon: float = Field(0.005, ge=0, le=1)
    #: optional minimum gain in macro-F1 required for promotion
    promote_min_gain: float = Field(0.0, ge=0, le=1)
    #: precision aimed at when recommending a confidence threshold
    target_precision: float = Field(0.9, gt=0, le=1)
    #: model versions kept per field (older inactive ones are deleted)
    keep_versions: int = Field(5, ge=1)
