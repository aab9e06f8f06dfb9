"""``helpdesk-connector demo``: routing seen end to end on embedded defaults (the steps: :mod:`connector.demo`).

Its configuration is ``--config FILE``, else the project's ``config.example.yaml``
(not ``$HELPDESK_CONNECTOR_CONFIG`` or ``./config.yaml``: the demo needs the
example's ``sandbox`` system, and keeps its state apart in ``--state-dir``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from connector.cli.config import EXIT_CONFIG, echo_config_error, load_or_exit


def demo(
    config_file: Annotated[Path | None, typer.Option("--config", help="configuration (default: config.example.yaml)")] = None,
    state_dir: Annotated[Path, typer.Option(help="where the demo keeps its database and models")] = Path("var/demo"),
    epochs: Annotated[int | None, typer.Option(help="training epochs (default: training.epochs)")] = None,
    fresh: Annotated[bool, typer.Option(help="forget earlier decisions so every demo ticket is routed again")] = True,
) -> None:
    """Route the sample tickets in a sandbox helpdesk with a model trained on the sample data."""
    from connector.demo import (
        EXAMPLE_CONFIG,
        SYSTEM,
        apply_recommended_thresholds,
        ensure_model,
        forget_sandbox_decisions,
        render,
        route_once,
        split_sample,
    )
    from connector.logging_setup import configure_from_config
    from connector.sandbox.db import sample_tickets_path

    console = Console()
    path = config_file or EXAMPLE_CONFIG
    config = load_or_exit(path, report=echo_config_error)
    if SYSTEM not in config.systems or config.systems[SYSTEM].type != "generic_rest":
        typer.echo(f"error: {path} has no generic_rest system named {SYSTEM!r} for the sandbox", err=True)
        raise typer.Exit(EXIT_CONFIG)
    config.state_dir = state_dir.resolve()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    configure_from_config(config)
    if fresh:
        forget_sandbox_decisions(config)
    with tempfile.TemporaryDirectory(prefix="hc-demo-") as tmp:
        workdir = Path(tmp)
        train_file, demo_file, demo_rows = split_sample(sample_tickets_path(), workdir)
        ensure_model(config, train_file, console, epochs=epochs)
        apply_recommended_thresholds(config, console)
        console.print(f"[bold]routing[/bold] {len(demo_rows)} new tickets in a sandbox helpdesk on 127.0.0.1 …")
        result, tickets, decisions = route_once(config, demo_file, workdir)
    render(console, result, tickets, decisions, demo_rows)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("demo")(demo)
