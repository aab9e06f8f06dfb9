"""Running the API: ``helpdesk-connector serve`` as a process, and inside another event loop (the daemon's)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from sqlalchemy import select

from connector.api.auth import InsecureBindError
from connector.api.daemon_hook import register_jobs
from connector.api.server import serve_in_background
from connector.model.classifier import ClassifierHolder
from connector.model.serving import ModelReloader
from connector.store.db import Store
from connector.store.tables import ModelVersion, TrainingJob
from tests.support.api import QUEUES, install_tiny_models, api_config, sample_csv
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.processes import wait_gone
from tests.support.tiny_model import build_tiny_model



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


@pytest.mark.slow
def test_serve_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config_path = _write_config(tmp_path, {"port": port})
    config = api_config(tmp_path)  # same state_dir (tmp_path/state)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    store.dispose()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
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


@pytest.mark.slow
def test_serve_starts_on_built_in_defaults_without_a_config_file(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_CONNECTOR_")}
    env["PYTHONPATH"] = str(REPO)
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


def _job_row(store: Store, job_id: int) -> TrainingJob:
    with store.session() as session:
        row = session.get(TrainingJob, job_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.mark.slow
def test_training_worker_dies_with_a_killed_server_and_restart_reports_it(tmp_path: Path) -> None:
    port = free_port()
    base = build_tiny_model(tmp_path / "base", QUEUES, version="base")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": "state",
        "model": {"fields": ["queue", "priority"], "device": "cpu", "base_model": str(base)},
        "training": {"epochs": 100, "batch_size": 4, "max_length": 32, "early_stopping_patience": 0},
        "api": {"port": port},
    }), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "connector", "serve", "--config", str(path)]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(f"sqlite:///{tmp_path / 'state' / 'connector.db'}", apply_migrations=False)
    try:
        _wait_ready(url, server)
        upload = httpx.post(url + "/api/v1/train-data", content=sample_csv(12), headers={"Content-Type": "text/csv"})
        assert upload.status_code == 201, upload.text
        job_id = httpx.post(url + "/api/v1/train?wait=false", json={"activate": "always"}).json()["job_id"]
        deadline = time.monotonic() + 60
        while (row := _job_row(store, job_id)).state != "running" or row.pid == server.pid:
            assert row.state in ("queued", "running") and time.monotonic() < deadline, (row.state, row.error)
            time.sleep(0.2)
        worker = row.pid
        assert worker and worker != server.pid
        server.kill()  # kill -9: no shutdown code runs in the server
        server.wait(timeout=30)
        # the worker follows its server at once instead of training on and activating its model
        assert wait_gone(worker, 20), "the training worker outlived its killed server"
        row = _job_row(store, job_id)
        assert row.state == "failed" and "gone" in (row.error or ""), (row.state, row.error)
        with store.session() as session:
            assert session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first() is None
        # a restart reports the job as ended and serves without a model, as before the training
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait_ready(url, server).status_code == 503
        job = httpx.get(f"{url}/api/v1/train/{job_id}").json()
        assert job["state"] == "failed" and job["finished_at"], job
    finally:
        server.kill()
        server.wait(timeout=30)
        store.dispose()


def test_serve_refuses_public_address_without_tokens(tmp_path: Path) -> None:
    config_path = _write_config(tmp_path, {"host": "0.0.0.0", "port": free_port()})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "connector", "serve", "--config", str(config_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "api.tokens" in result.stderr and "loopback" in result.stderr


def test_serve_in_background_shares_the_holder_and_stops_when_cancelled(tmp_path: Path) -> None:
    port = free_port()
    config = api_config(tmp_path, port=port)
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
    fake = SimpleNamespace(config=api_config(tmp_path), add_task=tasks.append, store=None, holder=None, reloader=None)
    register_jobs(fake)
    assert tasks == []  # api.enabled is false by default
    fake.config.api.enabled = True
    register_jobs(fake)
    assert len(tasks) == 1 and callable(tasks[0])
    fake.config.api.host = "0.0.0.0"
    with pytest.raises(InsecureBindError):
        register_jobs(fake)
