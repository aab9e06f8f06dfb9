"""The store tests run on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.store.db import Store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on each backend (see ``db_url``)."""
    s = Store(db_url)
    try:
        yield s
    finally:
        s.dispose()
