"""CPU sizing: micro-batching workers and torch threads per forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from connector.config import ConfigError, parse_config
from connector.model import threads


def _config(tmp_path: Path, model: dict | None = None, api: dict | None = None):  # type: ignore[no-untyped-def]
    return parse_config({"state_dir": str(tmp_path), "model": {"device": "cpu", **(model or {})}, "api": api or {}})


def test_auto_runs_one_single_threaded_pass_per_core_in_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    config = _config(tmp_path)
    assert threads.micro_batch_workers(config) == 4
    assert threads.cpu_threads(config, serving_api=True) == 1
    # without the API in the process, the daemon's one pass at a time gets every core
    assert threads.cpu_threads(config, serving_api=False) == 4


def test_auto_workers_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 64)
    config = _config(tmp_path)
    assert threads.micro_batch_workers(config) == threads.MAX_AUTO_WORKERS
    assert threads.cpu_threads(config, serving_api=True) == 64 // threads.MAX_AUTO_WORKERS


def test_explicit_settings_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    config = _config(tmp_path, model={"cpu_threads": 3}, api={"micro_batch_workers": 2})
    assert threads.micro_batch_workers(config) == 2
    assert threads.cpu_threads(config, serving_api=True) == 3
    shared = _config(tmp_path, api={"micro_batch_workers": 2})
    assert threads.cpu_threads(shared, serving_api=True) == 4


def test_out_of_range_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="micro_batch_workers: .*must be .auto. or a number from 1 to 32"):
        _config(tmp_path, api={"micro_batch_workers": 0})
    with pytest.raises(ConfigError, match="cpu_threads: .*must be .auto. or a number from 1 to 256"):
        _config(tmp_path, model={"cpu_threads": "many"})


def test_apply_sets_torch_threads_on_a_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert threads.apply_cpu_threads(_config(tmp_path), serving_api=True) == 1
        assert torch.get_num_threads() == 1
        assert threads.apply_cpu_threads(_config(tmp_path, model={"cpu_threads": 2}), serving_api=True) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
