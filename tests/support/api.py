"""Helpers of the REST API tests: a configured installation with tiny models, and a live uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from connector.api.app import create_app
from connector.config import AppConfig
from connector.model.classifier import ClassifierHolder
from connector.model.registry import ModelRegistry
from connector.model.train import TrainedModel
from connector.store.db import Store
from tests.support.config import make_config
from tests.support.tiny_model import build_tiny_model

QUEUES = ["Hardware", "Access", "HR"]
PRIORITIES = ["low", "high"]

ADMIN_TOKEN = "admin-token-0123456789abcdef"
CLASSIFY_TOKEN = "classify-token-0123456789abcdef"

# word lists from the tiny model's vocabulary, so trained models can learn something
_WORDS = {
    "Hardware": "printer laptop screen disk broken",
    "Access": "password vpn access login account",
    "HR": "salary holiday hr contract invoice",
}


def api_config(tmp: Path, *, tokens: bool = False, **api: Any) -> AppConfig:
    """An installation that serves the API (two fields, quick training); ``tokens``: an admin and a classify token."""
    section: dict[str, Any] = {"micro_batch_wait_ms": 2, **api}
    if tokens:
        section["tokens"] = [
            {"name": "ops", "token": ADMIN_TOKEN, "scopes": ["admin"]},
            {"name": "router", "token": CLASSIFY_TOKEN, "scopes": ["classify"]},
        ]
    return make_config(
        tmp,
        model={"fields": ["queue", "priority"], "device": "cpu", "batch_size": 16},
        training={"epochs": 1, "batch_size": 8, "max_length": 32, "min_examples_per_class": 2},
        api=section,
    )


def install_tiny_models(config: AppConfig, store: Store, *, version: str = "tiny-1") -> dict[str, Path]:
    """Build tiny queue and priority models and register them as active."""
    registry = ModelRegistry(store, config.models_dir, device="cpu")
    paths = {}
    for field, labels in (("queue", QUEUES), ("priority", PRIORITIES)):
        path = build_tiny_model(config.models_dir / field / version, labels, version=version, field=field)
        registry.register(TrainedModel.from_dir(path), activate=True, reason="test set-up")
        paths[field] = path
    return paths


def sample_csv(rows_per_queue: int = 8) -> str:
    lines = ["text,queue,priority"]
    for q, words in _WORDS.items():
        for i in range(rows_per_queue):
            ws = words.split()
            text = " ".join(ws[(i + k) % len(ws)] for k in range(4)) + f" please help {'urgent' if i % 2 else 'slow'}"
            lines.append(f'"{text} {i}",{q},{"high" if i % 2 else "low"}')
    return "\n".join(lines) + "\n"


class LiveServer:
    """The app on a real uvicorn server on 127.0.0.1 (free port), in a thread."""

    def __init__(self, app: Any) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def live_api(config: AppConfig, store: Store, **kwargs: Any) -> Iterator[tuple[httpx.Client, Any]]:
    """A client of a live server for ``create_app(config, store, **kwargs)``, and the app."""
    kwargs.setdefault("reload_interval", None)
    app = create_app(config, store, kwargs.pop("holder", None) or ClassifierHolder(), load_models=True, **kwargs)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, app


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
