"""Tickets routed per second against a real Request Tracker 5, and where the time goes.

Brings up RT from Debian's packages on 127.0.0.1 (``tests/support/rt_server.py``; install
with ``.ci/install-rt.sh``), creates N tickets in a source queue, and lets the
daemon's real pipeline (``Daemon.run_once``: list, read bodies, classify with a
tiny transformer, claim, re-read, write queue+priority, add the note, record)
route them.  Every HTTP call to RT is timed by a wrapping httpx transport.

Two variants run on fresh batches in the same RT, in the same run:

* ``adapter``: the adapter as shipped (the listing's fields stand in for the
  first read, bodies are cached, so the re-read before the write is one call);
* ``baseline``: the same adapter with those two savings switched off
  (``listing_reuse_seconds: 0``, ``body_cache_size: 0``), i.e. the naive call
  pattern: every read is a fresh search plus a body read.

Printed per variant: tickets/s, RT calls per ticket by kind, mean RT time per
call, the share of wall time with at least one RT call in flight ("RT busy")
and the rest ("daemon": classification, store, scheduling), then the ratio
adapter/baseline.

    .venv/bin/python bench/rt.py [--tickets 30] [--workers 2] [--concurrency 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
from tests.support.rt_server import CONNECTOR_RIGHTS, RtServer, rt_unavailable_reason  # noqa: E402
from tests.support.tiny_model import build_tiny_model  # noqa: E402

from adapters.request_tracker import RequestTrackerAdapter, RequestTrackerSettings  # noqa: E402
from connector.config import AppConfig, parse_config  # noqa: E402
from connector.daemon import Daemon  # noqa: E402
from connector.model.classifier import Classifier, ClassifierHolder, TransformerClassifier  # noqa: E402
from connector.store.db import Store  # noqa: E402

TARGETS = ["Network", "Hardware", "Software"]
PRIORITIES = ["10", "50", "90"]
TEXTS = [
    "The VPN drops every few minutes since this morning, please help",
    "My laptop screen flickers and the docking station is not detected",
    "Outlook cannot send mail, error 0x800CCC0E after the update",
    "Printer on floor 2 prints only blank pages",
    "Password reset for the HR portal does not arrive by email",
]


def kind_of(request: httpx.Request) -> str:
    path = request.url.path
    if request.method == "PUT":
        return "update (PUT ticket)"
    if path.endswith("/comment"):
        return "note (POST comment)"
    if path.endswith("/attachments"):
        return "body (attachments)"
    if path.endswith("/history"):
        return "history"
    if path.endswith("/tickets"):
        query = request.url.params.get("query", "")
        return "re-read (search id=N)" if query.startswith("id = ") else "list (search page)"
    if "/queues" in path:
        return "queues"
    return "other"


@dataclass
class CallLog:
    calls: list[tuple[str, float, float]] = field(default_factory=list)

    def busy_seconds(self) -> float:
        """Wall time with at least one call in flight (union of the call intervals)."""
        total = 0.0
        end = float("-inf")
        for _, start, stop in sorted(self.calls, key=lambda c: c[1]):
            if start > end:
                total += stop - start
                end = stop
            elif stop > end:
                total += stop - end
                end = stop
        return total


class TimedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, log: CallLog) -> None:
        super().__init__()
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = await super().handle_async_request(request)
        await response.aread()
        self.log.calls.append((kind_of(request), start, time.perf_counter()))
        return response


class TimedClassifier:
    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def fields(self) -> Any:
        return self.inner.fields

    @property
    def version(self) -> str:
        return self.inner.version

    def classify(self, texts: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.classify(texts)
        finally:
            self.seconds += time.perf_counter() - start


def run_variant(rt: RtServer, name: str, classifier: Classifier, workdir: Path, tickets: int, concurrency: int,
                extra_conn: dict[str, Any]) -> dict[str, Any]:
    queue = f"bench-{name}"
    with rt.client() as c:
        c.post("/queue", json={"Name": queue}).raise_for_status()
    t0 = time.perf_counter()
    ids = [rt.create_ticket(queue, f"{name} {i}", TEXTS[i % len(TEXTS)]) for i in range(tickets)]
    create_s = time.perf_counter() - t0

    conn = {"base_url": rt.base_url, "token": rt.tokens["connector"], **extra_conn}
    config = bench_config(workdir, name, queue, conn, concurrency)
    log = CallLog()
    adapter = RequestTrackerAdapter("rt", RequestTrackerSettings.model_validate(conn), source_queues=[queue],
                                    source_states=["new"], transport=TimedTransport(log))
    timed = TimedClassifier(classifier)
    store = Store(config.store_url)
    try:
        daemon = Daemon(config, store=store, holder=ClassifierHolder(timed), adapters={"rt": adapter})
        start = time.perf_counter()
        results = asyncio.run(daemon.run_once())
        wall = time.perf_counter() - start
    finally:
        store.dispose()
    result = results["rt"]
    routed = result.outcomes.get("applied", 0)
    if result.error is not None or routed != tickets:
        raise SystemExit(f"{name}: routed {routed}/{tickets}, error {result.error!r}")
    wrong = [tid for tid in ids[:3] if rt.ticket(tid)["queue"] not in TARGETS]
    if wrong:
        raise SystemExit(f"{name}: tickets {wrong} were not moved")
    return figures(name, tickets, wall, log, timed.seconds, create_s)


def bench_config(workdir: Path, name: str, queue: str, conn: dict[str, Any], concurrency: int) -> AppConfig:
    return parse_config({
        "state_dir": str(workdir),
        "store": {"url": f"sqlite:///{workdir / f'{name}.db'}"},
        "daemon": {"instance_id": "bench"},
        "systems": {"rt": {
            "type": "request_tracker", "connection": conn,
            "source": {"queues": [queue], "states": ["new"]},
            "page_size": 50, "max_concurrent_writes": concurrency, "mode": "apply",
            "routing": {"queue": {"map": {"*": "{label}"}, "threshold": 0.0},
                        "priority": {"map": {"*": "{label}"}, "threshold": 0.0}},
        }},
    })


def figures(name: str, tickets: int, wall: float, log: CallLog, classify_s: float, create_s: float) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, s, e in log.calls:
        by_kind[kind].append(e - s)
    busy = log.busy_seconds()
    return {
        "variant": name,
        "tickets": tickets,
        "wall_s": round(wall, 2),
        "tickets_per_s": round(tickets / wall, 2),
        "rt_calls": len(log.calls),
        "rt_calls_per_ticket": round(len(log.calls) / tickets, 2),
        "calls_per_ticket_by_kind": {k: round(len(v) / tickets, 2) for k, v in sorted(by_kind.items())},
        "mean_ms_by_kind": {k: round(1000 * sum(v) / len(v)) for k, v in sorted(by_kind.items())},
        "rt_call_seconds_sum": round(sum(e - s for _, s, e in log.calls), 2),
        "rt_busy_s": round(busy, 2),
        "rt_busy_share": round(busy / wall, 3),
        "daemon_s": round(wall - busy, 2),
        "classify_s": round(classify_s, 2),
        "ticket_create_per_s": round(tickets / create_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="rt-server worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="max_concurrent_writes of the daemon")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    reason = rt_unavailable_reason()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as tmp:
        work = Path(tmp)
        models = {
            "queue": build_tiny_model(work / "mq", TARGETS, version="bq-1", field="queue"),
            "priority": build_tiny_model(work / "mp", PRIORITIES, version="bp-1", field="priority", seed=1),
        }
        classifier = TransformerClassifier.from_dirs(models, device="cpu")
        rt = RtServer(work / "rt", workers=args.workers)
        rt.write_config()
        rt.init_database()
        rt.provision(["Triage", *TARGETS], {"connector": {"*": CONNECTOR_RIGHTS}})
        rt.start()
        try:
            rows = [
                run_variant(rt, "baseline", classifier, work, args.tickets, args.concurrency,
                            {"listing_reuse_seconds": 0, "body_cache_size": 0}),
                run_variant(rt, "adapter", classifier, work, args.tickets, args.concurrency, {}),
            ]
        finally:
            rt.stop()

    base, ours = rows
    print(f"Request Tracker 5.0.3 (Debian), rt-server --max-workers {args.workers}, SQLite, 127.0.0.1; "
          f"daemon max_concurrent_writes={args.concurrency}; {os.cpu_count()} CPU(s) shared with RT")
    for r in rows:
        print(f"\n[{r['variant']}] {r['tickets']} tickets in {r['wall_s']} s = {r['tickets_per_s']} tickets/s; "
              f"{r['rt_calls_per_ticket']} RT calls/ticket")
        print(f"  RT busy {r['rt_busy_s']} s ({100 * r['rt_busy_share']:.0f} % of wall), daemon-only "
              f"{r['daemon_s']} s (of which classification {r['classify_s']} s)")
        for kind, per in r["calls_per_ticket_by_kind"].items():
            print(f"  {kind:26s} {per:5.2f}/ticket  {r['mean_ms_by_kind'][kind]:6d} ms mean")
    print(f"\nadapter vs baseline: throughput x{ours['tickets_per_s'] / base['tickets_per_s']:.2f}, "
          f"RT calls per ticket x{ours['rt_calls_per_ticket'] / base['rt_calls_per_ticket']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
