"""Fixtures for the Request Tracker suite: one real RT per test session, on 127.0.0.1.

When RT is not installed the suite is skipped locally, but fails when ``CI`` is
set: in CI the integration suite must never be skipped silently.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.support.rt_server import CONNECTOR_RIGHTS, RtServer, rt_unavailable_reason

#: queues every test may route into (the connector user has its rights on each)
TARGET_QUEUES = ["Network", "Hardware", "Software", "Fallback", "Kim's \\ queue"]
_counter = itertools.count(1)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtServer]:
    reason = rt_unavailable_reason()
    if reason is not None:
        if _ci():
            pytest.fail(f"CI=true but Request Tracker cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    server = RtServer(tmp_path_factory.mktemp("rt"), workers=2)
    server.write_config()
    server.init_database()
    server.provision(
        ["Triage", *TARGET_QUEUES],
        {
            # rights granted globally so that each test's own source queue is covered
            "connector": {"*": CONNECTOR_RIGHTS},
            # may modify and comment in Triage but may not move tickets into Network
            "limited": {"Triage": ("ShowTicket", "ModifyTicket", "CommentOnTicket", "SeeQueue"),
                        "Network": ("SeeQueue", "ShowTicket")},
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def source_queue(rt: RtServer, request: pytest.FixtureRequest) -> str:
    """A fresh queue for this test's new tickets, so tests do not see each other's tickets."""
    name = f"src-{next(_counter)}-{request.node.name[:40]}"
    with rt.client() as c:
        r = c.post("/queue", json={"Name": name})
        r.raise_for_status()
    return name
