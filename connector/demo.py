"""The steps of ``helpdesk-connector demo`` (the command: :mod:`connector.cli.demo`): routing seen end to end.

It starts the sandbox helpdesk on 127.0.0.1, fine-tunes the shipped base model
on four fifths of the project's sample tickets (once; later runs reuse the
active model), puts the other fifth into the sandbox's Inbox as new tickets,
runs one routing pass of the daemon configured by ``config.example.yaml``, and
prints what happened to each ticket beside the label a person gave it.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO_ROOT / "config.example.yaml"
SYSTEM = "sandbox"


def split_sample(sample: Path, workdir: Path, every: int = 5) -> tuple[Path, Path, list[dict[str, str]]]:
    """Write the training part and the demo part (every ``every``-th ticket) of the sample CSV."""
    with sample.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    train_rows = [r for i, r in enumerate(rows) if i % every]
    demo_rows = [r for i, r in enumerate(rows) if not i % every]
    train_file, demo_file = workdir / "train.csv", workdir / "demo.csv"
    for path, part in ((train_file, train_rows), (demo_file, demo_rows)):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
    return train_file, demo_file, demo_rows


def ensure_model(config: Any, train_file: Path, console: Console, *, epochs: int | None) -> None:
    """Train and activate a model on ``train_file`` unless the registry has an active one for every field."""
    from connector.model.data import load_labeled_file
    from connector.model.registry import ModelRegistry
    from connector.model.train import train_models
    from connector.store.db import Store

    store = Store(config.store_url)
    try:
        registry = ModelRegistry.from_config(config, store)
        active = {info.field for info in registry.list() if info.active}
        if set(config.model.fields) <= active:
            console.print(f"[dim]using the active models in {config.models_dir}[/dim]")
            return
        settings = config.training if epochs is None else config.training.model_copy(update={"epochs": epochs})
        data = load_labeled_file(train_file, subject_column="subject", body_column="body", label_columns=list(config.model.fields))
        console.print(
            f"[bold]training[/bold] one model per field ({', '.join(config.model.fields)}) on {len(data)} sample tickets, "
            f"{settings.epochs} epochs on the CPU or GPU — about two minutes on two cores"
        )
        run = train_models(data, output_dir=config.models_dir, settings=settings, device=config.model.device)
        registry.add_run(run, activate="always", epsilon=settings.promote_epsilon,
                         min_gain=settings.promote_min_gain, keep=settings.keep_versions)
        for field, model in run.models.items():
            base = run.baselines.get(field)
            console.print(
                f"  {field}: macro-F1 {model.metrics.get('macro_f1', 0):.3f} on the hold-out"
                + (f" (linear baseline {base.macro_f1:.3f})" if base else "")
            )
    finally:
        store.dispose()


def route_once(config: Any, demo_file: Path, workdir: Path) -> tuple[Any, list[Any], list[Any]]:
    """Seed a sandbox with the demo tickets as new, run one routing pass, return (result, tickets, decisions)."""
    from connector.daemon import Daemon
    from connector.sandbox import running_sandbox
    from connector.store.db import Store
    from connector.store.decisions import DecisionStore

    with running_sandbox(workdir, seed=demo_file, seed_as_new=True) as sandbox:
        system = config.systems[SYSTEM]
        connection = system.connection.model_copy(update={"base_url": sandbox.api})
        config.systems[SYSTEM] = system.model_copy(update={"connection": connection})
        results = asyncio.run(Daemon(config).run_once())
        count = sandbox.db.count_tickets()
        tickets = [sandbox.db.get_ticket(i) for i in range(1, count + 1)]
    store = Store(config.store_url)
    try:
        decisions = DecisionStore(store, "demo").recent(SYSTEM, limit=10_000)
    finally:
        store.dispose()
    return results.get(SYSTEM), tickets, decisions


def apply_recommended_thresholds(config: Any, console: Console) -> None:
    """Route with the thresholds that evaluation recommends for the active models (precision target on the hold-out)."""
    from connector.model.registry import ModelRegistry
    from connector.store.db import Store

    store = Store(config.store_url)
    try:
        registry = ModelRegistry.from_config(config, store)
        active = {info.field: info for info in registry.list() if info.active}
    finally:
        store.dispose()
    routing = config.systems[SYSTEM].routing
    for field, rule in routing.fields().items():
        info = active.get(field)
        recommended = info.metrics.get("recommended_threshold") if info else None
        if recommended is None:
            continue
        rule.threshold = float(recommended)
        console.print(
            f"  {field}: confidence threshold {rule.threshold:.2f} (recommended by the evaluation for precision "
            f"{config.training.target_precision:.2f} on the hold-out)"
        )


def render(console: Console, result: Any, tickets: list[Any], decisions: list[Any], demo_rows: list[dict[str, str]]) -> None:
    by_id = {d.ticket_id: d for d in decisions}
    table = Table(title="the new tickets after one routing pass")
    for col in ("id", "subject", "model says", "moved to", "a person chose"):
        table.add_column(col, overflow="ellipsis", no_wrap=True)
    routed = right = 0
    for ticket, row in zip(tickets, demo_rows, strict=False):
        decision = by_id.get(str(ticket.id))
        predicted = (decision.predictions or {}).get("queue", {}) if decision else {}
        moved = (decision.applied or {}).get("queue") if decision else None
        if moved and moved != "Triage":
            routed += 1
            right += moved == row["queue"]
        table.add_row(
            str(ticket.id),
            ticket.subject[:28],
            f"{predicted.get('label', '—')} {predicted.get('confidence', 0):.2f}",
            ticket.queue,
            row["queue"],
        )
    console.print(table)
    if result is not None:
        console.print(f"poll: {result.summary()} in {result.seconds:.1f} s")
    console.print(
        f"[bold]{routed}[/bold] of {len(tickets)} tickets routed to a queue, [bold]{right}[/bold] of them to the one a person "
        f"chose; the other {len(tickets) - routed} went to the fallback queue 'Triage' (confidence below the threshold)."
    )


def forget_sandbox_decisions(config: Any) -> None:
    """The demo's sandbox is new each run (ticket ids start at 1 again): drop its old decisions and cursor."""
    from sqlalchemy import delete

    from connector.store.db import Store
    from connector.store.tables import Decision, PollState

    store = Store(config.store_url)
    try:
        with store.session() as session:
            session.execute(delete(Decision).where(Decision.system == SYSTEM))
            session.execute(delete(PollState).where(PollState.system == SYSTEM))
    finally:
        store.dispose()
