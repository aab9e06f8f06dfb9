"""Fixtures of the Zammad tests: the stand-in, and the stand-in served on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.zammad_standin import RunningStandin, ZammadStandin, running_standin


@pytest.fixture
def standin() -> ZammadStandin:
    return ZammadStandin()


@pytest.fixture
def server(standin: ZammadStandin) -> Iterator[RunningStandin]:
    with running_standin(standin) as running:
        yield running
