"""Learning curve of the learning loop on the shared IT-ticket data.

Simulates the loop over time: tickets of ``it_service_tickets_train.csv``
(``Document`` -> text, ``Topic_group`` -> queue) arrive as resolved tickets in
a fixed order and are exported into a real store (SQLite) by the real
:class:`~connector.learning.export.Exporter` (cleaning, anonymisation,
eval-set flag).  Each time the accumulated training examples (those not held
apart by the loop) reach 1k, 2k, 4k and 8k, a challenger is trained on them
and scored on a FIXED bench set of 2,000 tickets that is never exported; the
loop's promotion rule (the registry's: macro-F1 not lower by more than
epsilon) decides whether it replaces the previous model.

    .venv/bin/python bench/learning_curve.py [--data FILE] [--steps 1000,2000,4000,8000]
        [--transformer] [--epochs 1] [--max-length 96] [--eval-size 2000]

The linear model (TF-IDF + linear SVM, the CPU baseline of the model
lifecycle) always runs; ``--transformer`` also fine-tunes all-MiniLM-L6-v2
(slow on 2 CPU cores: run it in the background with ``nice``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from adapters.base import Adapter, AdapterSettings, Ticket, TicketChange, TicketPage  # noqa: E402
from connector.config import AppConfig  # noqa: E402
from connector.learning.dataset import build_training_sets  # noqa: E402
from connector.learning.export import Exporter, is_eval_ticket  # noqa: E402
from connector.model.data import LabeledData  # noqa: E402
from connector.model.evaluate import evaluate_predictions  # noqa: E402
from connector.store.db import Store, utcnow  # noqa: E402
from connector.text import ticket_text  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "it_service_tickets_train.csv"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class _Settings(AdapterSettings):
    pass


class ReplayAdapter(Adapter):
    """Serves a growing list of resolved tickets (the simulated helpdesk)."""

    settings_model = _Settings

    def __init__(self) -> None:
        super().__init__("bench", _Settings(), source_queues=[], source_states=[])
        self.tickets: list[Ticket] = []

    async def list_resolved_tickets(self, since: datetime | None, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        rows = [t for t in self.tickets if since is None or t.updated_at > since]  # type: ignore[operator]
        start = int(cursor or 0)
        while start < len(rows):
            chunk = rows[start : start + page_size]
            start += len(chunk)
            yield TicketPage(chunk, str(start))

    async def get_ticket(self, ticket_id: str) -> Ticket:
        raise NotImplementedError

    def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        raise NotImplementedError

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        raise NotImplementedError

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        raise NotImplementedError

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        raise NotImplementedError

    async def list_queues(self) -> list[str]:
        return []

    async def list_priorities(self) -> list[str]:
        return []


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["Document"], r["Topic_group"]) for r in csv.DictReader(f)]


def macro_f1_linear(train: LabeledData, bench: LabeledData) -> tuple[float, float, float]:
    from connector.model.baseline import LinearModel

    texts, labels = train.for_field("queue")
    started = time.perf_counter()
    model = LinearModel().fit(texts, labels)
    seconds = time.perf_counter() - started
    btexts, blabels = bench.for_field("queue")
    preds = model.predict(btexts, top_k=1)
    ev = evaluate_predictions("queue", blabels, [p.label for p in preds])
    return ev.macro_f1, ev.accuracy, seconds


def macro_f1_transformer(
    train: LabeledData, bench: LabeledData, work: Path, epochs: int, max_length: int, lr: float, batch_size: int
) -> tuple[float, float, float]:
    from connector.model.classifier import FieldModel, resolve_device
    from connector.model.settings import TrainingSettings
    from connector.model.train import train_field

    settings = TrainingSettings(
        epochs=epochs, max_length=max_length, batch_size=batch_size, learning_rate=lr, early_stopping_patience=0
    )
    started = time.perf_counter()
    trained = train_field(train, "queue", output_dir=work, settings=settings, device="auto", show_progress=False)
    seconds = time.perf_counter() - started
    model = FieldModel(trained.path, device=resolve_device("auto"), max_length=max_length)
    btexts, blabels = bench.for_field("queue")
    preds = model.predict(btexts, batch_size=64, top_k=1)
    ev = evaluate_predictions("queue", blabels, [p.label for p in preds])
    return ev.macro_f1, ev.accuracy, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", default="1000,2000,4000,8000")
    parser.add_argument("--eval-size", type=int, default=2000)
    parser.add_argument("--transformer", action="store_true")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--lr", type=float, default=5e-5, help="transformer learning rate")
    parser.add_argument("--batch-size", type=int, default=32, help="transformer batch size")
    parser.add_argument("--epsilon", type=float, default=0.005)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]

    rows = read_rows(args.data)
    # the fixed bench set: chosen by a stable hash, never exported, never trained on
    order = list(range(len(rows)))
    bench_idx = [i for i in order if is_eval_ticket("bench-holdout", str(i), 0.1)][: args.eval_size]
    bench_set = set(bench_idx)
    stream = [i for i in order if i not in bench_set]
    random.Random(42).shuffle(stream)  # the order in which tickets get resolved
    bench = LabeledData(
        texts=[ticket_text(None, rows[i][0]) for i in bench_idx], labels={"queue": [rows[i][1] for i in bench_idx]}
    )

    work = Path(tempfile.mkdtemp(prefix="learning-curve-"))
    config = AppConfig(
        state_dir=work,
        model={"fields": ["queue"]},
        systems={"helpdesk": {"type": "generic_rest", "page_size": 500}},
        learning={"enabled": True, "eval_fraction": 0.2, "export_overlap_minutes": 0},
    )
    store = Store(f"sqlite:///{work / 'store.db'}")
    adapter = ReplayAdapter()
    exporter = Exporter(config, store, adapter_factory=lambda c, s: adapter)

    print(f"data: {args.data.name}, {len(rows)} rows; fixed bench set {len(bench)} tickets; steps {steps}")
    print(f"{'examples':>8} {'exported':>8} {'loop eval':>9} {'model':<12} {'macro-F1':>8} {'accuracy':>8} {'train s':>8} {'promoted':>8}")
    results = []
    champion: dict[str, float | None] = {"linear": None, "transformer": None}
    cursor = 0
    for target in steps:
        # export in daily batches until the loop has ``target`` training examples
        while True:
            sets = build_training_sets(config, store)
            if len(sets.train) >= target or cursor >= len(stream):
                break
            need = max(1, int((target - len(sets.train)) / (1 - config.learning.eval_fraction)) + 1)
            resolved = utcnow() + timedelta(seconds=1)
            for i in stream[cursor : cursor + need]:
                adapter.tickets.append(
                    Ticket(id=str(i), subject="", body=rows[i][0], queue=rows[i][1], priority=None, state="resolved", updated_at=resolved)
                )
            cursor += need
            time.sleep(1.1)
            # the next export asks only for tickets resolved since the previous one, as the daemon's would
            asyncio.run(exporter.export_system("helpdesk"))
        train = sets.train
        kinds = ["linear"] + (["transformer"] if args.transformer else [])
        for kind in kinds:
            if kind == "linear":
                f1, acc, secs = macro_f1_linear(train, bench)
            else:
                f1, acc, secs = macro_f1_transformer(
                    train, bench, work / "models" / str(target), args.epochs, args.max_length, args.lr, args.batch_size
                )
            previous = champion[kind]
            promoted = previous is None or f1 >= previous - args.epsilon
            if promoted:
                champion[kind] = f1
            results.append(
                {
                    "examples": len(train),
                    "exported": cursor,
                    "loop_eval_examples": len(sets.eval),
                    "model": kind,
                    "macro_f1": round(f1, 4),
                    "accuracy": round(acc, 4),
                    "train_seconds": round(secs, 1),
                    "promoted": promoted,
                }
            )
            print(
                f"{len(train):>8} {cursor:>8} {len(sets.eval):>9} {kind:<12} {f1:>8.4f} {acc:>8.4f} {secs:>8.1f} {'yes' if promoted else 'no':>8}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"bench_examples": len(bench), "results": results}, indent=2))
    store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
