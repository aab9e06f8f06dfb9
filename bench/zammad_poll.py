"""Zammad: HTTP requests and time per routed ticket, one daemon poll against the local stand-in.

Compares the adapter as shipped (first customer article cached between the listing and the re-read
before writing) with a baseline without that cache, measured in the same run.  The stand-in adds a
fixed latency per request to stand for the network.

    .venv/bin/python bench/zammad_poll.py [--tickets 200] [--latency-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_support import timed_poll  # noqa: E402

from adapters.common import BodyCache  # noqa: E402
from tests.support.fakes import KeywordClassifier  # noqa: E402
from tests.support.zammad_standin import ZammadStandin, running_standin  # noqa: E402

from connector.config import parse_config  # noqa: E402
from connector.daemon import Daemon, build_adapter  # noqa: E402
from connector.model.classifier import ClassifierHolder  # noqa: E402
from connector.store.db import Store  # noqa: E402

TEXTS = ["my laptop screen flickers", "I would like to book holiday in May", "the invoice is wrong, urgent"]


async def one_poll(url: str, state_dir: Path, *, cache: bool) -> tuple[int, float]:
    config = parse_config({
        "state_dir": str(state_dir),
        "systems": {"zammad": {
            "type": "zammad",
            "connection": {"base_url": url, "token": "agent-token", "max_concurrent_requests": 8},
            "source": {"queues": ["Incoming"]},
            "page_size": 50,
            "max_tickets_per_poll": 100_000,
            "max_concurrent_writes": 8,
            "routing": {"queue": {"map": {"it": "2nd Level", "hr": "Sales", "finance": "Service Desk"},
                                  "threshold": 0.5}},
        }},
    })
    adapter = build_adapter(config, "zammad")
    if not cache:
        adapter._bodies = BodyCache(0)  # type: ignore[attr-defined]  # a cache that keeps nothing
    store = Store(f"sqlite:///{state_dir / 'state.db'}")
    daemon = Daemon(config, store=store, holder=ClassifierHolder(KeywordClassifier()), adapters={"zammad": adapter})
    try:
        result, seconds = await timed_poll(daemon, "zammad")
    finally:
        store.dispose()
    assert result.ok, result
    return result.outcomes["applied"], seconds


def measure(tickets: int, latency: float, *, cache: bool) -> tuple[int, int, float]:
    standin = ZammadStandin(request_delay=latency)
    for i in range(tickets):
        standin.create_ticket(f"Ticket {i}", TEXTS[i % len(TEXTS)])
    standin.refresh_index()
    with running_standin(standin) as server, tempfile.TemporaryDirectory() as tmp:
        applied, seconds = asyncio.run(one_poll(server.url, Path(tmp), cache=cache))
    return applied, len(standin.requests), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    rows = []
    for label, cache in (("baseline (no body cache)", False), ("adapter as shipped", True)):
        applied, requests, seconds = measure(args.tickets, latency, cache=cache)
        rows.append((label, applied, requests, seconds))
        print(f"{label:26s} applied {applied:5d}  requests {requests:5d}  "
              f"requests/ticket {requests / max(applied, 1):5.2f}  {seconds:6.2f} s  "
              f"{applied / seconds:7.1f} tickets/s")
    (_, _, base_req, base_s), (_, _, req, s) = rows
    print(f"ratio shipped/baseline: requests {req / base_req:.2f}, time {s / base_s:.2f} "
          f"({args.tickets} tickets, {args.latency_ms:g} ms per request)")


if __name__ == "__main__":
    main()
