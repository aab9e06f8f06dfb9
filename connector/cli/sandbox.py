"""``helpdesk-connector sandbox``: serve the sandbox helpdesk in the foreground."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from connector.sandbox.db import SandboxDB, sample_tickets_path

TOKEN_ENV = "HELPDESK_SANDBOX_TOKEN"


def _read_token(token_file: Path) -> str:
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        typer.echo(f"error: cannot read --token-file {token_file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None


def _add_queues(database: SandboxDB, names: list[str]) -> None:
    for name in names:
        try:
            database.add_queue(name)
        except ValueError as exc:
            typer.echo(f"error: --add-queue: {exc}", err=True)
            raise typer.Exit(2) from None


def _seed(database: SandboxDB, db: Path, seed: Path, *, as_new: bool, limit: int | None) -> None:
    """Create the tickets of ``seed`` unless the sandbox holds tickets already."""
    existing = database.count_tickets()
    if existing:
        typer.echo(f"{db} already holds {existing} tickets: not seeding again (use --reset to start over)")
        return
    try:
        count = database.seed_csv(seed, as_new=as_new, limit=limit)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot seed from {seed}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"seeded {count} tickets from {seed}")


def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on (keep it on 127.0.0.1).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8099,
    db: Annotated[Path, typer.Option("--db", help="SQLite file of the sandbox (created if missing).")] = Path(
        "var/sandbox.db"
    ),
    seed: Annotated[
        Path | None,
        typer.Option(help="CSV of tickets to create when the DB is empty: subject,body[,queue,priority,state] or text."),
    ] = None,
    sample: Annotated[
        bool,
        typer.Option(help="Seed the project's sample tickets (connector/sample_data) as new tickets in the Inbox."),
    ] = False,
    seed_as_new: Annotated[
        bool,
        typer.Option(help="Put every seeded ticket in the Inbox as new (ignore the file's queue/priority/state)."),
    ] = False,
    seed_limit: Annotated[int | None, typer.Option(help="Create at most this many tickets from --seed.")] = None,
    add_queue: Annotated[
        list[str] | None,
        typer.Option("--add-queue", help="Add a queue to the sandbox (repeatable; kept in the DB)."),
    ] = None,
    reset: Annotated[bool, typer.Option(help="Delete the DB file first and start empty (then seed).")] = False,
    token: Annotated[
        str | None,
        typer.Option(help=f"Require 'Authorization: Bearer TOKEN' (or set {TOKEN_ENV}).", envvar=TOKEN_ENV),
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="Read the bearer token from this file.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Start a small helpdesk on 127.0.0.1 (SQLite + REST API) to try the connector against."""
    from connector.sandbox.server import bind, serve

    if token_file is not None:
        token = _read_token(token_file)
    if sample:
        if seed is not None:
            typer.echo("error: give either --seed or --sample", err=True)
            raise typer.Exit(2)
        seed, seed_as_new = sample_tickets_path(), True
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host}: the sandbox is not hardened, keep it on 127.0.0.1", err=True)
    try:
        sock = bind(host, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc} (another sandbox? use --port)", err=True)
        raise typer.Exit(2) from None
    database = SandboxDB(db, reset=reset)
    _add_queues(database, add_queue or [])
    if seed is not None:
        _seed(database, db, seed, as_new=seed_as_new, limit=seed_limit)
    auth = "bearer token required" if token else "no auth"
    typer.echo(
        f"sandbox helpdesk on http://{host}:{port}/api ({auth}); DB {db}, {database.count_tickets()} tickets;"
        f" OpenAPI at http://{host}:{port}/openapi.json"
    )
    os.environ.pop(TOKEN_ENV, None)
    serve(database, token=token, log_level=log_level, sock=sock)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("sandbox")(sandbox)
