"""Running the API: ``helpdesk-connector serve`` as a process, and inside another event loop (the daemon's)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from api_helpers import install_tiny_models, make_config
from connector.api.auth import InsecureBindError
from connector.api.daemon_hook import register_jobs
from connector.api.server import serve_in_background
from connector.model.classifier import ClassifierHolder
from connector.model.serving import ModelReloader
from connector.store.db import Store

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            return httpx.get(url + "/readyz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not come up")


def _write_config(tmp_path: Path, api: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "state_dir": "state",
        "model": {"fields": ["queue", "priority"], "device": "cpu"},
        "api": api,
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_serve_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    config_path = _write_config(tmp_path, {"port": port})
    config = make_config(tmp_path)  # same state_dir (tmp_path/state)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    store.dispose()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "serve", "--config", str(config_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = _wait_ready(url, proc)
        assert ready.status_code == 200, ready.text
        answer = httpx.post(url + "/api/v1/classify", json={"ticket_data": "printer broken"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == "queue=tiny-1,priority=tiny-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode("utf-8", "replace")
    # uvicorn re-raises the signal after a graceful shutdown: ending by SIGTERM is a clean stop
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "no api.tokens configured" in output and "loopback" in output
    assert f"listening on http://127.0.0.1:{port}" in output


def test_serve_starts_on_built_in_defaults_without_a_config_file(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_CONNECTOR_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}", proc)
        # a fresh install: no model yet, but the API is up and says so
        assert ready.status_code == 503, ready.text
        assert (tmp_path / "var" / "connector.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode("utf-8", "replace")
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "built-in defaults" in output and str(tmp_path / "var") in output, output
    # a configuration named but missing is still an error
    result = subprocess.run(
        [sys.executable, "-m", "connector", "serve", "--config", str(tmp_path / "missing.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "file not found" in result.stderr


def test_serve_refuses_public_address_without_tokens(tmp_path: Path) -> None:
    config_path = _write_config(tmp_path, {"host": "0.0.0.0", "port": _free_port()})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "connector", "serve", "--config", str(config_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "api.tokens" in result.stderr and "loopback" in result.stderr


def test_serve_in_background_shares_the_holder_and_stops_when_cancelled(tmp_path: Path) -> None:
    port = _free_port()
    config = make_config(tmp_path, port=port)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    holder = ClassifierHolder()
    reloader = ModelReloader(config, store, holder)
    reloader.load_initial()

    async def main() -> tuple[int, str]:
        task = asyncio.create_task(serve_in_background(config, store, holder, reloader))
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(300):
                try:
                    ready = await client.get("/readyz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            answer = await client.post("/api/v1/classify", json={"ticket_data": "printer"})
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ready.status_code, answer.json()["model_version"]

    status, version = asyncio.run(main())
    assert status == 200
    assert version == holder.current.version
    with pytest.raises(httpx.TransportError):  # stopped
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    store.dispose()


def test_daemon_hook(tmp_path: Path) -> None:
    tasks: list[object] = []
    fake = SimpleNamespace(config=make_config(tmp_path), add_task=tasks.append, store=None, holder=None, reloader=None)
    register_jobs(fake)
    assert tasks == []  # api.enabled is false by default
    fake.config.api.enabled = True
    register_jobs(fake)
    assert len(tasks) == 1 and callable(tasks[0])
    fake.config.api.host = "0.0.0.0"
    with pytest.raises(InsecureBindError):
        register_jobs(fake)
