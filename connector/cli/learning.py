"""Commands of the learning loop: ``export`` and ``retrain``.

``export --output FILE.csv|.jsonl`` asks the systems for resolved tickets
(since ``--since``, default: all) and writes them as training data; the store
and the export cursors are not touched.  ``export --store`` runs what the
daemon's schedule runs instead: the resumable export into the store (with
corrections and retention).  ``retrain`` trains a challenger now, in a worker
process, and promotes it only under the registry's rule (``--force``: promote
anyway).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from connector.cli.config import EXIT_CONFIG, ConfigOption, load_or_exit

EXIT_FAILED = 1


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD or an ISO 8601 time)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _export_to_file(config, systems: list[str], since: datetime | None, output: Path) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from connector.learning.export import iter_examples, make_adapter
    from connector.learning.files import ExampleWriter

    counts: dict[str, int] = {}
    with ExampleWriter(output, config.model.fields) as writer:
        for name in systems:
            adapter = make_adapter(config, name)
            try:
                n = 0
                async for items, _cursor in iter_examples(config, name, adapter, since=since):
                    writer.write(record.as_row() for _ticket, record in items if record.labels)
                    n += len(items)
                counts[name] = n
            finally:
                await adapter.aclose()
    return counts


def print_learning_status(cfg, *, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """The learning loop's part of ``status`` (used by ``status --learning`` and the plain ``status``)."""
    from connector.learning.status import learning_status, render_text
    from connector.store.db import Store

    store = Store(cfg.store_url)
    try:
        status = learning_status(cfg, store)
    finally:
        store.dispose()
    typer.echo(json.dumps(status, indent=2, default=str) if as_json else render_text(status))


async def _export_to_store(cfg, names: list[str], since: datetime | None) -> dict:  # type: ignore[no-untyped-def]
    from connector.learning.cycle import count_correction, publish_rates
    from connector.learning.export import Exporter
    from connector.learning.retention import apply_retention
    from connector.store.db import Store

    store = Store(cfg.store_url)
    try:
        exporter = Exporter(cfg, store, on_correction=count_correction)
        stats = [await exporter.export_system(n, since=since) for n in names]
        retention = apply_retention(store, cfg.learning.privacy.retention_days)
        publish_rates(store)
        return {"exports": [s.as_dict() for s in stats], "retention": asdict(retention)}
    finally:
        store.dispose()


def _export_systems(cfg: Any, system: list[str] | None) -> list[str]:
    names = system or [n for n, s in cfg.systems.items() if s.enabled]
    unknown = [n for n in names if n not in cfg.systems]
    if unknown:
        raise typer.BadParameter(f"unknown system(s): {', '.join(unknown)}; configured: {', '.join(cfg.systems)}")
    return names


def _run_export(cfg: Any, names: list[str], when: datetime | None, output: Path | None, as_json: bool) -> dict:
    """Export to the file (``output``) or into the store; prints the summary unless ``as_json``."""
    from connector.learning.files import file_format

    if output is not None:
        file_format(output)
        counts = asyncio.run(_export_to_file(cfg, names, when, output))
        if not as_json:
            typer.echo(f"wrote {sum(counts.values())} resolved tickets to {output} ({counts})")
        return {"output": str(output), "tickets": counts}
    result = asyncio.run(_export_to_store(cfg, names, when))
    if not as_json:
        for e in result["exports"]:
            typer.echo(
                f"{e['system']}: {e['tickets']} tickets, {e['new']} new examples, {e['updated']} updated, "
                f"{e['corrections']} corrections" + (" (resumed)" if e["resumed"] else "")
            )
        typer.echo(f"retention: {result['retention']}")
    return result


def export_command(
    config: ConfigOption = None,
    system: Annotated[list[str] | None, typer.Option("--system", "-s", help="only this system (repeatable)")] = None,
    since: Annotated[str | None, typer.Option(help="tickets resolved after this date/time (ISO 8601)")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the examples to FILE.csv or FILE.jsonl")
    ] = None,
    to_store: Annotated[
        bool, typer.Option("--store", help="export into the store as the schedule does (resumable, with corrections)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Export resolved tickets with their final queue and priority as training data."""
    from adapters.base import AdapterError
    from connector.learning.export import ExportError
    from connector.learning.files import ExportFileError

    cfg = load_or_exit(config)
    if (output is None) == (not to_store):
        raise typer.BadParameter("give either --output FILE.csv|.jsonl or --store")
    names = _export_systems(cfg, system)
    when = _parse_since(since)
    try:
        result = _run_export(cfg, names, when, output, as_json)
    except (ExportFileError, ExportError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except AdapterError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))


def _print_retrain(result: Any) -> None:
    typer.echo(f"retraining job {result.job_id}: {result.state}" + (f": {result.error}" if result.error else ""))
    for name, f in result.metrics.get("fields", {}).items():
        champ = f.get("champion") or {}
        champ_f1 = champ.get("macro_f1")
        typer.echo(
            f"  {name}: challenger {f['challenger']['version']} macro-F1 {f['challenger']['macro_f1']:.4f} vs "
            f"champion {champ.get('version') or 'none'} "
            f"{'-' if champ_f1 is None else f'{champ_f1:.4f}'}: "
            f"{'promoted' if f['promoted'] else 'not promoted'} ({f['reason']})"
        )
    if result.metrics.get("report"):
        typer.echo(f"  report: {result.metrics['report']}/report.md")


def retrain_command(
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option("--force", help="promote the challenger even if it is not better")] = False,
    base_dataset: Annotated[
        Path | None, typer.Option(help="train on this labelled file too (default: learning.base_dataset)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Retrain now on the exported examples; promote only if better (or --force)."""
    from connector.learning.retrain import RetrainBusy, retrain
    from connector.logging_setup import configure_from_config
    from connector.store.db import Store

    cfg = load_or_exit(config)
    configure_from_config(cfg)
    store = Store(cfg.store_url)
    try:
        result = retrain(cfg, store, trigger="cli", force=force, base_dataset=base_dataset)
    except RetrainBusy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        store.dispose()
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        _print_retrain(result)
    if result.state != "succeeded":
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("export")(export_command)
    app.command("retrain")(retrain_command)
