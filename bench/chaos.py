"""Chaos: route sandbox tickets while a daemon is SIGKILLed, note requests fail and people move tickets.

    .venv/bin/python bench/chaos.py [--tickets 2000] [--kills 20] [--hand-moves 20] [--note-faults 0.05]
                                    [--database URL] [--model default|tiny]

Two daemons (``helpdesk-connector run``, default settings: no ``instance_id``) share one store
(a fresh PostgreSQL database on 127.0.0.1 by default; an SQLite file with ``--database sqlite``)
and route the same sandbox helpdesk (generic REST adapter).  While they work:

* daemon A is SIGKILLed ``--kills`` times at random moments of the run and restarted at once;
* ``--note-faults`` of the note requests fail transiently: half answer 503 before anything is
  written, half are slower than the adapter's timeout (the note *is* written, the daemon sees a timeout);
* ``--hand-moves`` tickets still in the Inbox are moved to another queue by a person.

At the end (every ticket decided, no claim left) it reads the helpdesk and the store and prints:
routed, routed twice, moved without note, with two notes, without decision record, hand moves
overwritten.  Goal: 0 for all but routed, which is the tickets minus the hand-moved ones.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402
from bench_support import stop_process  # noqa: E402
from pipeline import TOKEN, build_default_models, sample_texts, seed, start_sandbox  # noqa: E402

from connector.sandbox.db import SandboxDB  # noqa: E402

QUEUES = ["Hardware", "Access", "Storage", "Purchase", "HR Support", "Miscellaneous"]
NOTE_MARK = "helpdesk-connector"  # every note the daemon writes names it
ADAPTER_TIMEOUT = 2.0
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# --------------------------------------------------------------------------- set-up


@contextmanager
def fresh_database(url: str, workdir: Path) -> Iterator[str]:
    """A store URL: a new PostgreSQL database (dropped afterwards), or an SQLite file for ``sqlite``."""
    if url == "sqlite":
        yield f"sqlite:///{workdir / 'store.sqlite3'}"
        return
    name = f"hc_chaos_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def build_models(kind: str, target: Path) -> dict[str, str]:
    if kind == "default":
        return build_default_models(target)
    from tests.support.tiny_model import build_tiny_model

    return {
        "queue": str(build_tiny_model(target / "queue", QUEUES, field="queue")),
        "priority": str(build_tiny_model(target / "priority", ["low", "normal", "high"], field="priority")),
    }


def daemon_config(api: str, state: Path, store_url: str, models: dict[str, str]) -> dict[str, Any]:
    """Default daemon settings (no instance_id); everything routes (threshold 0) to a queue of QUEUES."""
    queue_map = {label: QUEUES[i % len(QUEUES)] for i, label in enumerate(_labels(models["queue"]))}
    return {
        "state_dir": str(state),
        "store": {"url": store_url},
        "model": {"device": "cpu", "paths": models},
        "systems": {
            "sandbox": {
                "type": "generic_rest",
                "connection": {"base_url": api, "auth": {"type": "bearer", "token": TOKEN},
                               "timeout": ADAPTER_TIMEOUT},
                "source": {"queues": ["Inbox"], "states": ["new"]},
                "poll_interval": 1,
                "page_size": 50,
                "max_tickets_per_poll": 200,
                "routing": {"queue": {"map": queue_map, "threshold": 0.0},
                            "priority": {"map": {"*": "{label}"}, "threshold": 0.0}},
            }
        },
    }


def _labels(model_path: str) -> list[str]:
    import json

    config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    return [config["id2label"][k] for k in sorted(config["id2label"], key=int)]


def inject_note_faults(api: str, rate: float) -> None:
    """Half the faulty note requests fail before the write (503), half time out after it (slow answer)."""
    base = api.removesuffix("/api")
    for fault in ({"status": 503}, {"status": 0, "delay": ADAPTER_TIMEOUT + 1.0}):
        body = {"path": r"/tickets/\d+/notes$", "method": "POST", "times": -1, "probability": rate / 2, **fault}
        httpx.post(f"{base}/_sandbox/faults", json=body, timeout=10).raise_for_status()


# --------------------------------------------------------------------------- the run


@dataclass
class Daemon:
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(self.config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        return stop_process(self.proc)


@dataclass
class Chaos:
    """What was done to the system while it routed."""

    tickets: int
    kill_at: list[float]
    move_at: list[float]
    hand_moved: dict[int, str] = field(default_factory=dict)
    kills: int = 0
    note_faults: int = 0


def progress(db: SandboxDB, tickets: int) -> float:
    return 1.0 - db.list_tickets(queues=["Inbox"], limit=1)[1] / tickets


def hand_move(db: SandboxDB, api: str, chaos: Chaos, rng: random.Random) -> None:
    """A person moves a ticket that is still untouched in the Inbox (optimistic: only if nobody wrote it)."""
    rows = db.list_tickets(queues=["Inbox"], limit=chaos.tickets)[0]
    candidates = [r for r in rows if r.version == 1 and r.id not in chaos.hand_moved]
    for row in rng.sample(candidates, min(5, len(candidates))):
        target = rng.choice(QUEUES)
        answer = httpx.patch(f"{api}/tickets/{row.id}", json={"queue": target, "if_version": 1},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        if answer.status_code == 200:
            chaos.hand_moved[row.id] = target
            return


def drive(a: Daemon, db: SandboxDB, api: str, chaos: Chaos, rng: random.Random, deadline: float) -> None:
    """Kill and restart A and move tickets by hand as routing progresses, until the Inbox is empty."""
    while time.monotonic() < deadline:
        done = progress(db, chaos.tickets)
        while chaos.move_at and done >= chaos.move_at[0]:
            chaos.move_at.pop(0)
            hand_move(db, api, chaos, rng)
        if chaos.kill_at and done >= chaos.kill_at[0]:
            chaos.kill_at.pop(0)
            time.sleep(rng.uniform(0.0, 1.5))  # a random moment of the daemon's cycle
            a.kill()
            chaos.kills += 1
            a.start()
        if done >= 1.0 and not chaos.kill_at:
            return
        time.sleep(0.2)
    print("warning: the deadline passed before every ticket left the Inbox", flush=True)


def wait_settled(store_url: str, deadline: float) -> int:
    """Wait until no claim is left unfinished (a killed daemon's lease must expire first); returns those left."""
    engine = sa.create_engine(store_url)
    try:
        while True:
            with engine.connect() as conn:
                left = conn.execute(sa.text("SELECT count(*) FROM decisions WHERE status = 'claimed'")).scalar_one()
            if left == 0 or time.monotonic() >= deadline:
                return int(left)
            time.sleep(1.0)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the verdict


def verdict(db: SandboxDB, store_url: str, chaos: Chaos) -> dict[str, int]:
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        decided = dict(conn.execute(sa.text("SELECT ticket_id, status FROM decisions")).all())
    engine.dispose()
    notes: Counter[int] = Counter()
    counts: Counter[str] = Counter()
    rows = db.list_tickets(limit=chaos.tickets + 10)[0]
    for row in rows:
        notes[row.id] = sum(1 for n in db.list_notes(row.id) if NOTE_MARK in n.body)
        by_person = 1 if row.id in chaos.hand_moved else 0
        writes = row.version - 1 - by_person  # every update bumps the version; notes do not
        if by_person and row.queue != chaos.hand_moved[row.id]:
            counts["hand moves overwritten"] += 1
        if writes >= 1:
            counts["routed"] += 1
            counts["moved without note"] += notes[row.id] == 0
            counts["without decision record"] += decided.get(str(row.id)) != "applied"
        counts["routed twice"] += writes >= 2
        counts["with two notes"] += notes[row.id] >= 2
        counts["left in the Inbox"] += row.queue == "Inbox"
    return counts


def report(counts: dict[str, int], chaos: Chaos, seconds: float, left_claims: int) -> None:
    expected = chaos.tickets - len(chaos.hand_moved)
    print()
    print(f"{chaos.tickets} tickets, {chaos.kills} SIGKILLs of daemon A, {len(chaos.hand_moved)} moved by hand, "
          f"{chaos.note_faults} note requests failed (503 or timeout), {seconds:.0f} s")
    print(f"routed                  : {counts.get('routed', 0)} (goal {expected})")
    for key in ("routed twice", "moved without note", "with two notes", "without decision record",
                "hand moves overwritten", "left in the Inbox"):
        print(f"{key:<24}: {counts.get(key, 0)} (goal 0)")
    print(f"claims left unfinished  : {left_claims} (goal 0)")
    ok = counts.get("routed", 0) == expected and left_claims == 0 and not any(
        counts.get(k, 0) for k in ("routed twice", "moved without note", "with two notes",
                                   "without decision record", "hand moves overwritten"))
    print("verdict                 :", "OK" if ok else "MISSED")


def run(args: argparse.Namespace, workdir: Path) -> None:
    rng = random.Random(args.seed)
    proc, api, db = start_sandbox(workdir)
    a = b = None
    try:
        db.set_queues(["Inbox", *QUEUES])
        seed(db, args.tickets, sample_texts(), 0)
        models = build_models(args.model, workdir / "models")
        with fresh_database(args.database, workdir) as store_url:
            config = workdir / "config.yaml"
            config.write_text(yaml.safe_dump(daemon_config(api, workdir / "state", store_url, models)))
            inject_note_faults(api, args.note_faults)
            chaos = Chaos(args.tickets, sorted(rng.uniform(0.02, 0.95) for _ in range(args.kills)),
                          sorted(rng.uniform(0.0, 0.8) for _ in range(args.hand_moves)))
            a, b = Daemon(config, workdir / "daemon-a.log"), Daemon(config, workdir / "daemon-b.log")
            started = time.monotonic()
            a.start()
            b.start()
            deadline = started + args.timeout
            drive(a, db, api, chaos, rng, deadline)
            left = wait_settled(store_url, deadline)
            codes = (a.stop(), b.stop())
            chaos.note_faults = httpx.get(f"{api.removesuffix('/api')}/_sandbox/faults", timeout=10).json()["hits"]
            report(verdict(db, store_url, chaos), chaos, time.monotonic() - started, left)
            print(f"exit codes on SIGTERM   : A {codes[0]}, B {codes[1]}; logs in {workdir}" if args.keep else
                  f"exit codes on SIGTERM   : A {codes[0]}, B {codes[1]}")
    finally:
        for d in (a, b):
            if d is not None and d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--hand-moves", type=int, default=20)
    parser.add_argument("--note-faults", type=float, default=0.05)
    parser.add_argument("--database", default=POSTGRES, help=f"PostgreSQL server URL (default {POSTGRES}) or 'sqlite'")
    parser.add_argument("--model", choices=("default", "tiny"), default="default",
                        help="default: the shipped MiniLM with fresh heads; tiny: a 2-layer random model (fast)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    args = parser.parse_args()
    if args.keep:
        run(args, Path(tempfile.mkdtemp(prefix="hc-chaos-")))
        return
    with tempfile.TemporaryDirectory(prefix="hc-chaos-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
