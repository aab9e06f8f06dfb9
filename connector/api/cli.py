"""``helpdesk-connector serve``: the REST API on its own (see ``run`` with ``api.enabled`` for daemon + API)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from connector.config import AppConfig

log = logging.getLogger(__name__)

#: read from the working directory when neither --config nor $HELPDESK_CONNECTOR_CONFIG names a file
DEFAULT_CONFIG = "config.yaml"


def _load(config_file: Path | None) -> tuple[AppConfig, Path | None]:
    """The configuration and its file: a named file must exist; without one, ./config.yaml if present, else the
    built-in defaults with the state in ./var (None as the file)."""
    from connector.config import CONFIG_ENV, load_config, parse_config

    named = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if named is not None:
        return load_config(named), named
    if Path(DEFAULT_CONFIG).is_file():
        return load_config(DEFAULT_CONFIG), Path(DEFAULT_CONFIG)
    config = parse_config({}, "<built-in defaults>")
    config.state_dir = config.state_dir.resolve()
    return config, None


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("serve")
    def serve(
        config_file: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="The configuration file (default: $HELPDESK_CONNECTOR_CONFIG, else ./config.yaml, else built-in defaults with the state in ./var)"),
        ] = None,
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
        from connector.config import CONFIG_ENV, ConfigError
        from connector.logging_setup import configure_from_config
        from connector.model.threads import apply_cpu_threads
        from connector.store.db import Store, redact_url

        try:
            config, path = _load(config_file)
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        configure_from_config(config)
        if path is None:
            log.info(
                "no configuration file (%s in %s, or $%s): serving on built-in defaults; state (database, datasets, "
                "models, training jobs) in %s",
                DEFAULT_CONFIG, Path.cwd(), CONFIG_ENV, config.state_dir,
            )
        apply_cpu_threads(config, serving_api=True)
        try:
            log.info("state store %s", redact_url(config.store_url))
            store = Store(config.store_url)
            server = build_server(
                config,
                store,
                host=host,
                port=port,
                embedded=False,
                micro_batching=False if no_micro_batching else None,
            )
        except InsecureBindError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            asyncio.run(server.serve())
        finally:
            store.dispose()
