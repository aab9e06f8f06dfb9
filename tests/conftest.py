"""Fixtures shared by the whole suite.  Helpers and stand-ins live in :mod:`tests.support`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.store.db import Store
from tests.support.databases import sqlite_url, temporary_database


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store in an SQLite file under ``tmp_path``."""
    s = Store(sqlite_url(tmp_path))
    yield s
    s.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, once SQLite and once PostgreSQL (skipped when no server answers)."""
    with temporary_database(request.param, tmp_path, request.node.name) as url:
        yield url
