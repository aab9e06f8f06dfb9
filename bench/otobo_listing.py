"""Benchmark: HTTP calls and wall time to list new OTOBO tickets, batched TicketGet vs one ticket per call.

Against the local GenericInterface stand-in (tests/support/otobo_standin.py), with a fixed per-request latency
that stands for the network and OTOBO's own work per request.  The baseline (``get_batch_size=1``: one
TicketGet per ticket, as a naive client would do) is measured in the same run.

    .venv/bin/python bench/otobo_listing.py --tickets 500 --latency 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.otobo_standin import OtoboStandin  # noqa: E402

from connector.config import parse_config  # noqa: E402
from connector.daemon import build_adapter  # noqa: E402


async def list_all(base_url: str, batch: int, page_size: int, concurrency: int) -> int:
    """Tickets listed by the adapter the daemon would build from this configuration."""
    connection = {"base_url": base_url, "user_login": "bench", "password": "bench",
                  "get_batch_size": batch, "max_concurrent_requests": concurrency}
    config = parse_config({"systems": {"otobo": {"type": "otobo", "connection": connection,
                                                 "source": {"queues": ["Raw"], "states": ["new"]}}}})
    adapter = build_adapter(config, "otobo")
    count = 0
    async for page in adapter.list_new_tickets(None, page_size):
        count += len(page.tickets)
    await adapter.aclose()
    return count


def measure(standin: OtoboStandin, batch: int, page_size: int, concurrency: int) -> tuple[int, float, int]:
    standin.requests.clear()
    start = time.perf_counter()
    count = asyncio.run(list_all(standin.base_url, batch, page_size, concurrency))
    return len(standin.requests), time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.01, help="seconds added to every request")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with OtoboStandin(users={"bench": "bench"}) as standin:
        for i in range(args.tickets):
            standin.add_ticket(f"ticket {i}", f"body of ticket {i} " * 20)
            if i % 7 == 0:
                standin.advance(1)
        standin.delay = args.latency
        base_calls, base_seconds, base_count = measure(standin, 1, args.page_size, args.concurrency)
        calls, seconds, count = measure(standin, args.batch, args.page_size, args.concurrency)

    assert count == base_count == args.tickets, (count, base_count)
    print(f"tickets listed: {count}, latency per request {args.latency * 1000:.0f} ms, "
          f"page size {args.page_size}, concurrency {args.concurrency}")
    print(f"baseline (1 id per TicketGet):   {base_calls:5d} HTTP calls  {base_seconds:6.2f} s")
    print(f"batched ({args.batch} ids per TicketGet): {calls:5d} HTTP calls  {seconds:6.2f} s")
    print(f"ratio: {base_calls / calls:.1f}x fewer calls, {base_seconds / seconds:.1f}x faster")


if __name__ == "__main__":
    main()
