"""The HTTP settings every adapter shares: one name each, old names accepted and reported as deprecated."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.generic_rest import GenericRestSettings
from adapters.http import HttpSettings, HttpTransport
from adapters.otobo_znuny import OtoboZnunySettings
from adapters.request_tracker import RequestTrackerSettings
from adapters.zammad import ZammadSettings
from connector.config import load_config
from tests.support.paths import REPO

OTOBO = {"base_url": "http://otobo.example/ws", "user_login": "u", "password": "p"}

#: (settings model, the other settings it needs, old key, old value, new key)
RENAMED = [
    (OtoboZnunySettings, OTOBO, "max_concurrency", 2, "max_concurrent_requests"),
    (GenericRestSettings, {"base_url": "http://h.example"}, "max_connections", 3, "max_concurrent_requests"),
    (GenericRestSettings, {"base_url": "http://h.example"}, "retries", 2, "retry_attempts"),
    (ZammadSettings, {"token": "t"}, "url", "http://zammad.example", "base_url"),
    (RequestTrackerSettings, {"token": "t"}, "url", "http://rt.example/rt", "base_url"),
]


def test_every_adapter_shares_the_common_names() -> None:
    common = set(HttpSettings.model_fields)
    for model in (OtoboZnunySettings, GenericRestSettings, ZammadSettings, RequestTrackerSettings):
        assert issubclass(model, HttpSettings)
        assert common <= set(model.model_fields), model.__name__


@pytest.mark.parametrize(("model", "base", "old", "value", "new"), RENAMED)
def test_old_names_are_still_accepted(model: type[HttpSettings], base: dict, old: str, value: object, new: str) -> None:
    settings = model.model_validate({**base, old: value})
    assert str(getattr(settings, new)).rstrip("/") == str(value)
    with pytest.raises(ValidationError, match=f"{old} is the old name of {new}"):
        model.model_validate({**base, old: value, new: value})


def test_transport_is_built_from_the_common_settings() -> None:
    settings = ZammadSettings.model_validate(
        {"base_url": "http://zammad.example/", "token": "t", "retry_attempts": 2, "retry_max_wait": 3, "timeout": 7}
    )
    transport = HttpTransport.from_settings(settings, system="z")
    assert str(transport.client.base_url).rstrip("/") == "http://zammad.example"
    assert (transport.retry.attempts, transport.retry.max_wait) == (2, 3)
    assert transport.client.timeout.read == 7


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            systems:
              desk:
                type: generic_rest
                connection:
                  base_url: http://127.0.0.1:9/api
                  retries: 2
                  max_connections: 3
            """
        ),
        encoding="utf-8",
    )
    return path


def test_load_warns_once_per_old_key_naming_it_the_new_key_and_the_system(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        config = load_config(_config(tmp_path))
    settings = config.adapter_settings("desk")
    assert (settings.retry_attempts, settings.max_concurrent_requests) == (2, 3)
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert any("retries" in w and "retry_attempts" in w and "desk" in w for w in warnings)
    assert any("max_connections" in w and "max_concurrent_requests" in w and "desk" in w for w in warnings)


def test_check_config_shows_the_deprecation(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "connector", "check-config", str(_config(tmp_path))],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "systems.desk.connection.retries is deprecated" in out, out
    assert "retry_attempts" in out
