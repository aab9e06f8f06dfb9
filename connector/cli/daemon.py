"""Commands of the routing engine: ``run``, ``check-config``, ``classify``, ``retry-failed``, ``status``.

The configuration comes from :mod:`connector.cli.config`; ``classify`` runs on
the built-in defaults when there is no file, the others need one.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from connector.cli.config import (
    EXIT_CONFIG,
    ConfigOption,
    DefaultsConfigOption,
    config_path,
    load_or_exit,
    print_config_error,
)
from connector.cli.learning import print_learning_status
from connector.config import AppConfig, ConfigError, ConfigProblem

# --------------------------------------------------------------------------- online checks


async def online_problems(config: AppConfig) -> list[ConfigProblem]:
    """Log in to every enabled system and check that each mapped queue and priority exists there."""
    from adapters.base import AdapterError
    from connector.daemon import build_adapter

    problems: list[ConfigProblem] = []
    for name, system in config.systems.items():
        if not system.enabled:
            continue
        prefix = f"systems.{name}"
        adapter = build_adapter(config, name)
        try:
            try:
                await adapter.check_connection()
                queues = set(await adapter.list_queues())
                priorities = set(await adapter.list_priorities())
            except AdapterError as exc:
                problems.append(ConfigProblem(f"{prefix}.connection", f"cannot use {name}: {exc.__class__.__name__}: {exc}"))
                continue
            for queue in system.source.queues:
                if queue not in queues:
                    problems.append(ConfigProblem(f"{prefix}.source.queues", f"queue {queue!r} does not exist in {name}"))
            for field, known in (("queue", queues), ("priority", priorities)):
                routing = system.routing.fields().get(field)
                if routing is None:
                    continue
                for value in sorted(routing.system_values()):
                    if value in known:
                        continue
                    key = "fallback" if value == routing.fallback and value not in routing.map.values() else "map"
                    shown = ", ".join(sorted(known)[:20]) + (" …" if len(known) > 20 else "")
                    problems.append(
                        ConfigProblem(
                            f"{prefix}.routing.{field}.{key}",
                            f"{field} {value!r} does not exist in {name} (it has: {shown or 'none'})",
                        )
                    )
        finally:
            await adapter.aclose()
    return problems


# --------------------------------------------------------------------------- helpers


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "never"




def run_command(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="poll every system once, then exit")] = False,
) -> None:
    """Run the routing daemon (until SIGTERM/SIGINT, or one poll with --once)."""
    # idle OpenMP threads sleep between batches instead of spinning on a CPU shared with the helpdesk
    # (set before torch is imported; the environment may override it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from connector.daemon import run_daemon
    from connector.logging_setup import configure_from_config
    from connector.model.threads import apply_cpu_threads

    cfg = load_or_exit(config)
    configure_from_config(cfg)
    apply_cpu_threads(cfg, serving_api=cfg.api.enabled)
    raise typer.Exit(run_daemon(cfg, once=once))


def check_config_command(
    file: Annotated[Path | None, typer.Argument(help="configuration file to check")] = None,
    online: Annotated[
        bool, typer.Option("--online", help="also log in to each system and check mapped queues and priorities")
    ] = False,
) -> None:
    """Validate a configuration file: exit 0 when valid, else list every problem and exit 2."""
    path = config_path(file)
    cfg = load_or_exit(path)
    if online:
        from connector.logging_setup import collect_secrets, configure_logging

        configure_logging("WARNING", "text", collect_secrets(cfg))
        problems = asyncio.run(online_problems(cfg))
        if problems:
            print_config_error(ConfigError(str(path), problems))
            raise typer.Exit(EXIT_CONFIG)
    systems = ", ".join(cfg.systems) or "none"
    typer.echo(f"{path}: valid ({len(cfg.systems)} system(s): {systems}){' and online checks passed' if online else ''}")


def _ticket_body(text: str | None, file: Path | None) -> str:
    """The text given as the argument or read from --file ('-': stdin); exit 2 unless exactly one is given."""
    if (text is None) == (file is None):
        typer.echo("give either TEXT or --file", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if file is None:
        return text or ""
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    return raw.decode("utf-8", errors="replace")


def _load_classifier_or_exit(cfg: AppConfig) -> Any:
    from connector.model.classifier import ModelLoadError
    from connector.model.serving import load_classifier
    from connector.store.db import Store

    store = Store(cfg.store_url)
    try:
        return load_classifier(cfg, store)
    except ModelLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.dispose()


def _print_classification(prediction: Any, routes: dict[str, dict[str, Any]]) -> None:
    typer.echo(f"model {prediction.model_version}")
    for field, fp in prediction.fields.items():
        others = ", ".join(f"{s.label} {s.confidence:.2f}" for s in fp.top_k[1:])
        typer.echo(f"  {field}: {fp.label} ({fp.confidence:.2f})" + (f"   next: {others}" if others else ""))
    for name, route in routes.items():
        sets = ", ".join(f"{k} -> {v!r}" for k, v in route["would_set"].items()) or "nothing"
        typer.echo(f"  {name} ({route['mode']}): {route['outcome']}: {sets}")


def classify_command(
    text: Annotated[str | None, typer.Argument(help="ticket text (subject and body)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="read the ticket text from a file ('-': stdin)")] = None,
    subject: Annotated[str, typer.Option("--subject", help="the ticket's subject, if given apart")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: DefaultsConfigOption = None,
) -> None:
    """Classify one ticket text with the active models and show what each system would do."""
    from adapters.base import Ticket
    from connector.logging_setup import collect_secrets, configure_logging
    from connector.routing import decide
    from connector.text import ticket_text

    body = _ticket_body(text, file)
    cfg = load_or_exit(config, defaults=True)
    configure_logging("WARNING", cfg.logging.format, collect_secrets(cfg))
    classifier = _load_classifier_or_exit(cfg)
    prediction = classifier.classify([ticket_text(subject, body)])[0]
    ticket = Ticket(id="-", subject=subject, body=body, queue=None, priority=None)
    routes = {}
    for name, system in cfg.systems.items():
        decision = decide(prediction, system, ticket)
        routes[name] = {"mode": system.mode, "outcome": decision.status, "would_set": decision.would_set}
    if as_json:
        typer.echo(json.dumps({"model_version": prediction.model_version, "fields": prediction.as_dict(),
                               "systems": routes}, indent=2, ensure_ascii=False))
        return
    _print_classification(prediction, routes)


def retry_failed_command(
    system: Annotated[str, typer.Argument(help="the system whose failed tickets to retry")],
    config: ConfigOption = None,
) -> None:
    """Forget a system's failed decisions (e.g. after fixing the mapping) so the next poll retries them."""
    from connector.store.db import Store
    from connector.store.decisions import DecisionStore

    cfg = load_or_exit(config)
    if system not in cfg.systems:
        typer.echo(f"error: no system {system!r} in the configuration (systems: {', '.join(cfg.systems) or 'none'})",
                   err=True)
        raise typer.Exit(EXIT_CONFIG)
    store = Store(cfg.store_url)
    try:
        count = DecisionStore(store, "cli").forget_failed(system)
    finally:
        store.dispose()
    typer.echo(f"{system}: {count} failed ticket(s) will be decided again at the next poll"
               " (those still listed as new)")


# --------------------------------------------------------------------------- status


def _check_health(cfg: AppConfig, health: dict[str, Any], max_age: float | None) -> None:
    """``status --check``: print "healthy", or each stale system on stderr and exit 1."""
    from connector.store.db import utcnow

    stale = []
    now = utcnow()
    for name, system in cfg.systems.items():
        if not system.enabled:
            continue
        limit = max_age if max_age is not None else 3 * system.poll_interval + 600
        h = health.get(name)
        age = (now - h.last_poll_at).total_seconds() if h and h.last_poll_at else None
        if age is None or age > limit:
            stale.append(f"{name}: last poll {'never' if age is None else f'{age:.0f} s ago'} (limit {limit:.0f} s)")
    for line in stale:
        typer.echo(f"unhealthy: {line}", err=True)
    if stale:
        raise typer.Exit(1)
    typer.echo("healthy")


def _status_row(name: str, cfg: AppConfig, h: Any, c: dict[str, int]) -> dict[str, Any]:
    return {
        "system": name,
        "configured": name in cfg.systems,
        "last_poll": h.last_poll_at.isoformat() if h and h.last_poll_at else None,
        "last_success": h.last_success_at.isoformat() if h and h.last_success_at else None,
        "consecutive_failures": h.consecutive_failures if h else 0,
        "last_error": h.last_error if h and h.consecutive_failures else None,
        "routed": c.get("applied", 0),
        "suggested": c.get("suggested", 0),
        "dry_run": c.get("dry_run", 0),
        "skipped": c.get("skipped", 0),
        "changed": c.get("changed", 0),
        "failed": c.get("failed", 0),
        "in_flight": c.get("claimed", 0),
        "_health": h,
    }


_DECISION_LABELS = (
    ("routed", "routed"), ("suggested", "suggested"), ("dry_run", "dry-run"), ("skipped", "skipped"),
    ("changed", "changed"), ("failed", "failed"), ("in_flight", "in flight"),
)


def _print_status(cfg: AppConfig, rows: list[dict[str, Any]], running: list[Any]) -> None:
    typer.echo(f"daemons running: {len(running)}")
    for lease in running:
        typer.echo(f"  {lease.instance_id}  {lease.describe()}")
    if not rows:
        typer.echo("no system configured or recorded")
    for r in rows:
        h = r["_health"]
        system = cfg.systems.get(r["system"])
        what = f"{system.type}, {system.mode}" + ("" if system.enabled else ", disabled") if system else "not configured"
        typer.echo(f"{r['system']} ({what})")
        typer.echo(f"  last poll     {_fmt_time(h.last_poll_at if h else None)}")
        typer.echo(f"  last success  {_fmt_time(h.last_success_at if h else None)}")
        typer.echo("  decisions     " + "  ".join(f"{label} {r[key]}" for key, label in _DECISION_LABELS))
        if r["last_error"]:
            typer.echo(f"  last error    {r['last_error']} ({r['consecutive_failures']} failed poll(s) in a row)")


def _read_status(cfg: AppConfig) -> tuple[dict[str, Any], dict[str, dict[str, int]], list[Any]]:
    """Health and decision counts per system, and the live daemons' leases."""
    from connector.store.db import Store
    from connector.store.decisions import DecisionStore
    from connector.store.leases import live_leases

    store = Store(cfg.store_url)
    try:
        decisions = DecisionStore(store, "cli")
        return decisions.health(), decisions.counts(), live_leases(store)
    finally:
        store.dispose()


def status_command(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="health check: exit 1 unless every enabled system was polled recently"),
    ] = False,
    max_age: Annotated[
        float | None,
        typer.Option(help="--check: seconds since the last poll that still count as alive "
                          "(default: 3 x poll_interval + 600, room for the backoff while a helpdesk is down)"),
    ] = None,
    learning: Annotated[
        bool,
        typer.Option("--learning", help="the learning loop: corrections per label, share routed automatically, "
                                        "active model, drift, retraining jobs"),
    ] = False,
) -> None:
    """Per system: last poll, decisions routed / suggested / skipped / failed, last error."""
    cfg = load_or_exit(config)
    if learning:
        print_learning_status(cfg, as_json=as_json)
        return
    health, counts, running = _read_status(cfg)
    if check:
        _check_health(cfg, health, max_age)
        return
    names = list(dict.fromkeys([*cfg.systems, *health, *counts]))
    rows = [_status_row(name, cfg, health.get(name), counts.get(name, {})) for name in names]
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "_health"} for r in rows], indent=2))
        return
    _print_status(cfg, rows, running)
    if cfg.learning.enabled:
        print_learning_status(cfg, as_json=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("run")(run_command)
    app.command("check-config")(check_config_command)
    app.command("classify")(classify_command)
    app.command("retry-failed")(retry_failed_command)
    app.command("status")(status_command)
