"""Fixtures of the daemon tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny queue (Hardware/Software/Access) and priority (low/normal/high) models, versions q1 and p1."""
    root = tmp_path_factory.mktemp("daemon-models")
    return {
        "queue": build_tiny_model(root / "queue", ["Hardware", "Software", "Access"], version="q1", field="queue"),
        "priority": build_tiny_model(root / "priority", ["low", "normal", "high"], version="p1", field="priority"),
    }
