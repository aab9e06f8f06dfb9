"""Helpers of the tests that run the daemon: against the sandbox helpdesk (generic REST) or any configured system."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adapters.base import TransientError
from connector.config import AppConfig
from connector.daemon import Daemon
from connector.model.classifier import ClassifierHolder
from connector.store.db import Store
from connector.store.decisions import DecisionStore
from tests.support.config import make_config
from tests.support.fakes import KeywordClassifier

#: the sandbox helpdesk's API token in these tests
SANDBOX_TOKEN = "sandbox-test-token-1234"


def sandbox_config(tmp_path: Path, base_url: str, *, models: dict[str, Path] | None = None, **system: Any) -> AppConfig:
    """One system ``sandbox`` (generic REST, bearer token, one attempt) at ``base_url``; ``system`` overrides its keys."""
    sys_cfg: dict[str, Any] = {
        "type": "generic_rest",
        "connection": {
            "base_url": base_url,
            "auth": {"type": "bearer", "token": SANDBOX_TOKEN},
            "retry_attempts": 1,
            "timeout": 2,
            "paging": {"style": "after"},
        },
        "source": {"queues": ["Inbox"], "states": ["new"]},
        "poll_interval": 0.3,
        "page_size": 20,
        "routing": {
            "queue": {"map": {"it": "Hardware", "hr": "HR", "finance": "Purchase"}, "threshold": 0.5},
            "priority": {"map": {"*": "{label}"}, "threshold": 0.5},
        },
    }
    sys_cfg.update(system)
    return make_config(
        tmp_path,
        daemon={"instance_id": "test-daemon", "shutdown_timeout": 5},
        model={"device": "cpu", "paths": {k: str(v) for k, v in (models or {}).items()}},
        systems={"sandbox": sys_cfg},
    )


def seed(sandbox: Any, n: int, body: str = "my printer is broken") -> list[int]:
    """``n`` new tickets in the sandbox; their ids."""
    return [sandbox.db.create_ticket(f"ticket {i}", body).id for i in range(n)]


_readers: dict[str, DecisionStore] = {}


def decisions(config: AppConfig) -> DecisionStore:
    """A reader of the daemon's store (one per database)."""
    url = config.store_url
    if url not in _readers:
        _readers[url] = DecisionStore(Store(url), "reader")
    return _readers[url]


def keyword_daemon(config: AppConfig) -> Daemon:
    return Daemon(config, holder=ClassifierHolder(KeywordClassifier()))


async def daemon_polls(
    cfg: Any, store: Any, count: int = 1, between: Any = None, classifier: Any = None, *, system: str
) -> list[Any]:
    """``count`` polls of ``system`` by one daemon (``between(i)`` runs after poll i), then close."""
    daemon = Daemon(cfg, store=store, holder=ClassifierHolder(classifier or KeywordClassifier()))
    await daemon.setup()
    results = []
    try:
        for i in range(count):
            result = await daemon.poll_system(system, force=True)
            assert result is not None
            results.append(result)
            if between is not None:
                between(i)
    finally:
        await daemon.close()
    return results


def decision_counts(store: Any, system: str) -> dict[str, int]:
    """Decisions of ``system`` by status."""
    return DecisionStore(store, "x").counts().get(system, {})


def assert_outage_loses_and_repeats_nothing(
    standin: Any, polls: Callable[..., Any], cfg: AppConfig, store: Any, ids: Sequence[Any]
) -> None:
    """The helpdesk stand-in goes away in the middle of a poll (its ``before_request`` hook sets ``down``): the
    poll fails transiently with some tickets routed; once it is back, the next poll routes the rest, and every
    ticket has exactly one note."""
    (broken,) = asyncio.run(polls(cfg, store))
    assert isinstance(broken.error, TransientError)
    routed_before = [t for t in ids if standin.notes(t)]
    assert 0 < len(routed_before) < 8
    standin.before_request = None
    standin.down = False
    (back,) = asyncio.run(polls(cfg, store))
    assert back.ok, back.error
    assert all(len(standin.notes(t)) == 1 for t in ids)  # never twice, none forgotten
