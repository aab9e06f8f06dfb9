"""The CUDA path: training in half precision, serving in fp16, hot swap freeing GPU memory.

Skipped where no CUDA device is present (CI has none); run on a machine with a GPU with
``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from connector.model.classifier import ClassifierHolder, TransformerClassifier, resolve_device
from connector.model.data import LabeledData, load_labeled_file
from connector.model.settings import TrainingSettings
from connector.model.train import TrainedModel, train_field
from tests.support.tiny_model import build_tiny_model, write_easy_tickets

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

SETTINGS = TrainingSettings(epochs=8, batch_size=16, max_length=32, learning_rate=5e-3, early_stopping_patience=8)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> LabeledData:
    return load_labeled_file(write_easy_tickets(tmp_path_factory.mktemp("data") / "easy.csv"))


@pytest.fixture(scope="module")
def trained_on_gpu(sample: LabeledData, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    base = build_tiny_model(tmp_path_factory.mktemp("base") / "tiny", ["x", "y"], version="base")
    out = tmp_path_factory.mktemp("models")
    return train_field(sample, "queue", output_dir=out, settings=SETTINGS, base_model=base, device="auto", version="g1")


def test_auto_picks_cuda() -> None:
    assert resolve_device("auto").type == "cuda"


def test_training_runs_on_cuda_in_half_precision(trained_on_gpu: TrainedModel) -> None:
    training = trained_on_gpu.training
    assert training["device"].startswith("cuda")
    assert training["half_precision"] is True
    assert training["peak_gpu_mb"] > 0
    # mixed-precision training really learns: the tiny model gets this two-queue task right (as on a CPU)
    assert trained_on_gpu.metrics["accuracy"] >= 0.9


def test_weights_saved_from_gpu_are_fp32_and_load_on_cpu(trained_on_gpu: TrainedModel) -> None:
    from safetensors.torch import load_file
    from transformers import pipeline

    tensors = load_file(str(trained_on_gpu.path / "model.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float32}
    clf = pipeline("text-classification", model=str(trained_on_gpu.path), device="cpu")
    assert clf("my printer is broken")[0]["label"] in trained_on_gpu.labels


def test_fp16_serving_on_cuda_agrees_with_cpu(trained_on_gpu: TrainedModel, sample: LabeledData) -> None:
    texts = list(sample.texts)
    gpu = TransformerClassifier.from_dirs({"queue": trained_on_gpu.path}, device="auto", batch_size=16)
    cpu = TransformerClassifier.from_dirs({"queue": trained_on_gpu.path}, device="cpu", batch_size=16)
    model = gpu.models["queue"]
    assert model.device.type == "cuda" and model.half
    assert next(model.model.parameters()).dtype == torch.float16
    on_gpu = [p.fields["queue"] for p in gpu.classify(texts)]
    on_cpu = [p.fields["queue"] for p in cpu.classify(texts)]
    assert len(on_gpu) == len(texts)
    worst = max(abs(g.confidence - c.confidence) for g, c in zip(on_gpu, on_cpu))
    assert worst < 0.02, f"fp16 confidences drift by {worst:.4f} from fp32"
    # labels may differ only where the CPU's top two are within fp16 noise of each other
    for g, c in zip(on_gpu, on_cpu):
        if g.label != c.label:
            assert c.scores[0].confidence - c.scores[1].confidence < 0.02


def test_hot_swap_on_cuda_frees_the_old_model(trained_on_gpu: TrainedModel, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", trained_on_gpu.labels, version="other", seed=5)
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    holder = ClassifierHolder(TransformerClassifier.from_dirs({"queue": trained_on_gpu.path}, device="cuda"))
    holder.current.classify(["printer broken"])
    one_model = torch.cuda.memory_allocated() - before
    assert one_model > 0
    old = holder.swap(TransformerClassifier.from_dirs({"queue": other}, device="cuda"))
    assert holder.current.classify(["vpn does not connect"])[0].model_version == "queue=other"
    del old
    gc.collect()
    torch.cuda.empty_cache()
    after = torch.cuda.memory_allocated() - before
    # the two tiny models are the same size: with the old one freed, about one model's worth stays
    assert after < 1.5 * one_model, (before, one_model, after)
