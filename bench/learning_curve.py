"""Learning curve of the learning loop on the shared IT-ticket data.

Simulates the loop over time: tickets of ``it_service_tickets_train.csv``
(``Document`` -> text, ``Topic_group`` -> queue) arrive as resolved tickets in
a fixed order in the sandbox helpdesk (resolved there as an agent would) and are
exported over its REST API (generic REST adapter) into a real store (SQLite) by the real
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from connector.config import AppConfig  # noqa: E402
from connector.learning.dataset import TrainingSets, build_training_sets  # noqa: E402
from connector.learning.export import Exporter, is_eval_ticket  # noqa: E402
from connector.model.data import LabeledData  # noqa: E402
from connector.model.evaluate import evaluate_model  # noqa: E402
from connector.sandbox import running_sandbox  # noqa: E402
from connector.sandbox.db import SandboxDB, SeedTicket  # noqa: E402
from connector.store.db import Store  # noqa: E402
from connector.text import ticket_text  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "it_service_tickets_train.csv"


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["Document"], r["Topic_group"]) for r in csv.DictReader(f)]


def macro_f1_linear(train: LabeledData, bench: LabeledData) -> tuple[float, float, float]:
    from connector.model.baseline import LinearModel

    texts, labels = train.for_field("queue")
    started = time.perf_counter()
    model = LinearModel().fit(texts, labels)
    seconds = time.perf_counter() - started
    ev = evaluate_model(model, "queue", *bench.for_field("queue"))
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
    ev = evaluate_model(model, "queue", *bench.for_field("queue"), batch_size=64)
    return ev.macro_f1, ev.accuracy, seconds


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def split_bench(rows: list[tuple[str, str]], eval_size: int) -> tuple[LabeledData, list[int]]:
    """The fixed bench set (chosen by a stable hash, never exported, never trained on) and the resolving order of the rest."""
    order = list(range(len(rows)))
    bench_idx = [i for i in order if is_eval_ticket("bench-holdout", str(i), 0.1)][:eval_size]
    bench_set = set(bench_idx)
    stream = [i for i in order if i not in bench_set]
    random.Random(42).shuffle(stream)  # the order in which tickets get resolved
    bench = LabeledData(
        texts=[ticket_text(None, rows[i][0]) for i in bench_idx], labels={"queue": [rows[i][1] for i in bench_idx]}
    )
    return bench, stream


@dataclass
class Loop:
    """The simulated helpdesk (the sandbox) and the learning loop's export into its store."""

    rows: list[tuple[str, str]]
    stream: list[int]
    helpdesk: SandboxDB
    config: AppConfig
    store: Store
    exporter: Exporter
    cursor: int = 0
    champion: dict[str, float | None] = field(default_factory=lambda: {"linear": None, "transformer": None})

    def export_until(self, target: int) -> TrainingSets:
        """Resolve and export tickets in daily batches until the loop has ``target`` training examples."""
        while True:
            sets = build_training_sets(self.config, self.store)
            if len(sets.train) >= target or self.cursor >= len(self.stream):
                return sets
            need = max(1, int((target - len(sets.train)) / (1 - self.config.learning.eval_fraction)) + 1)
            batch = self.stream[self.cursor : self.cursor + need]
            self.helpdesk.create_tickets(
                [SeedTicket("", self.rows[i][0], queue=self.rows[i][1], state="resolved") for i in batch]
            )
            self.cursor += len(batch)
            time.sleep(1.1)
            # the next export asks only for tickets resolved since the previous one, as the daemon's would
            asyncio.run(self.exporter.export_system("helpdesk"))


@contextmanager
def learning_loop(rows: list[tuple[str, str]], stream: list[int], work: Path) -> Iterator[Loop]:
    queues = sorted({queue for _, queue in rows})
    with running_sandbox(work / "sandbox", queues=queues) as sandbox:
        config = AppConfig(
            state_dir=work,
            model={"fields": ["queue"]},
            systems={"helpdesk": {"type": "generic_rest", "connection": {"base_url": sandbox.api}, "page_size": 500}},
            learning={"enabled": True, "eval_fraction": 0.2, "export_overlap_minutes": 0},
        )
        store = Store(f"sqlite:///{work / 'store.db'}")
        try:
            yield Loop(rows, stream, sandbox.db, config, store, Exporter(config, store))
        finally:
            store.dispose()


def score(kind: str, train: LabeledData, bench: LabeledData, work: Path, args: argparse.Namespace) -> tuple[float, float, float]:
    if kind == "linear":
        return macro_f1_linear(train, bench)
    return macro_f1_transformer(train, bench, work, args.epochs, args.max_length, args.lr, args.batch_size)


def run_step(loop: Loop, target: int, bench: LabeledData, work: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    """Export up to ``target`` examples, train a challenger of each kind on them and apply the promotion rule."""
    sets = loop.export_until(target)
    train = sets.train
    results: list[dict[str, object]] = []
    for kind in ["linear"] + (["transformer"] if args.transformer else []):
        f1, acc, secs = score(kind, train, bench, work / "models" / str(target), args)
        previous = loop.champion[kind]
        promoted = previous is None or f1 >= previous - args.epsilon
        if promoted:
            loop.champion[kind] = f1
        results.append(
            {
                "examples": len(train),
                "exported": loop.cursor,
                "loop_eval_examples": len(sets.eval),
                "model": kind,
                "macro_f1": round(f1, 4),
                "accuracy": round(acc, 4),
                "train_seconds": round(secs, 1),
                "promoted": promoted,
            }
        )
        print(
            f"{len(train):>8} {loop.cursor:>8} {len(sets.eval):>9} {kind:<12} {f1:>8.4f} {acc:>8.4f} {secs:>8.1f} {'yes' if promoted else 'no':>8}",
            flush=True,
        )
    return results


def main() -> int:
    args = parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    rows = read_rows(args.data)
    bench, stream = split_bench(rows, args.eval_size)
    work = Path(tempfile.mkdtemp(prefix="learning-curve-"))
    print(f"data: {args.data.name}, {len(rows)} rows; fixed bench set {len(bench)} tickets; steps {steps}")
    print(f"{'examples':>8} {'exported':>8} {'loop eval':>9} {'model':<12} {'macro-F1':>8} {'accuracy':>8} {'train s':>8} {'promoted':>8}")
    results = []
    with learning_loop(rows, stream, work) as loop:
        for target in steps:
            results += run_step(loop, target, bench, work, args)
    if args.json:
        args.json.write_text(json.dumps({"bench_examples": len(bench), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
