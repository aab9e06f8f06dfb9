"""``helpdesk-connector serve``: the REST API on its own (see ``run`` with ``api.enabled`` for daemon + API)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from connector.cli.config import DEFAULT_FILE, EXIT_CONFIG, DefaultsConfigOption, echo_config_error, load_or_exit

log = logging.getLogger(__name__)

def serve(
    config_file: DefaultsConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default: api.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default: api.port, 8080)")] = None,
    no_micro_batching: Annotated[
        bool, typer.Option("--no-micro-batching", help="Classify each request on its own (for comparisons)")
    ] = False,
) -> None:
    """Serve the REST API: classify, upload training data, train, manage models, health and metrics."""
    # idle OpenMP threads sleep instead of spinning: on a CPU shared with other processes spinning threads
    # slow inference down many times over (set before torch is imported; the environment may override it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from connector.api.auth import InsecureBindError
    from connector.api.server import build_server
    from connector.config import CONFIG_ENV
    from connector.logging_setup import configure_from_config
    from connector.model.threads import apply_cpu_threads
    from connector.store.db import Store, redact_url

    config = load_or_exit(config_file, defaults=True, report=echo_config_error)
    configure_from_config(config)
    if config.source_path is None:
        log.info(
            "no configuration file (%s in %s, or $%s): serving on built-in defaults; state (database, datasets, "
            "models, training jobs) in %s",
            DEFAULT_FILE, Path.cwd(), CONFIG_ENV, config.state_dir,
        )
    apply_cpu_threads(config, serving_api=True)
    try:
        log.info("state store %s", redact_url(config.store_url))
        store = Store(config.store_url)
        server = build_server(
            config, store, host=host, port=port, embedded=False,
            micro_batching=False if no_micro_batching else None,
        )
    except InsecureBindError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    try:
        asyncio.run(server.serve())
    finally:
        store.dispose()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("serve")(serve)
