"""Databases for the tests' stores: an SQLite file, or a fresh PostgreSQL database on the local test server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


PG_ADMIN_URL = os.environ.get("HC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> str | None:
    """None when the PostgreSQL test server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any connection problem means: skip
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.__class__.__name__}"


@contextmanager
def temporary_database(backend: str, tmp_path: Any, label: str) -> Iterator[str]:
    """A store URL for one test: an SQLite file under ``tmp_path`` (``backend="sqlite"``), or a fresh PostgreSQL
    database dropped afterwards (``"postgresql"``; the test is skipped when no server answers)."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path)
        return
    reason = pg_available()
    if reason:
        import pytest

        pytest.skip(reason)
    db = PgDatabase(label)
    try:
        yield db.url
    finally:
        db.drop()


class PgDatabase:
    """A fresh database for one test, dropped afterwards."""

    def __init__(self, label: str) -> None:
        import psycopg

        safe = "".join(c if c.isalnum() else "_" for c in label.lower())[:30]
        self.name = f"hc_routing_{safe}_{uuid.uuid4().hex[:8]}"
        self._psycopg = psycopg
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def drop(self) -> None:
        with self._psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
