"""Commands of the model lifecycle: ``train``, ``evaluate`` and ``models list|activate|rollback|history``.

``train`` fine-tunes one transformer per label field, always reports the
linear baseline beside it, registers the new version in the store and
activates it when it is at least as good as the active one on the same
hold-out (``--force`` always, ``--no-activate`` never).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from connector.cli.config import DefaultsConfigOption as ConfigOption
from connector.cli.config import echo_config_error, load_or_exit

log = logging.getLogger(__name__)

JsonOption = Annotated[bool, typer.Option("--json", help="print the result as one JSON object")]


def _console(json_mode: bool) -> Console:
    # with --json, stdout carries only the JSON object: human output goes to stderr
    return Console(stderr=True) if json_mode else Console()


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _echo_json(payload: Any) -> None:
    """The --json output: one JSON object on stdout."""
    typer.echo(json.dumps(payload, ensure_ascii=False))


def _registry(config: Any) -> Any:
    from connector.model.registry import ModelRegistry
    from connector.store.db import Store

    return ModelRegistry.from_config(config, Store(config.store_url))


def _load_data(path: Path, text_column: str | None, subject_column: str | None, body_column: str | None,
               label_columns: list[str] | None, min_examples: int, validate: bool = True) -> Any:
    from connector.model.data import load_labeled_file

    return load_labeled_file(
        path,
        text_column=text_column,
        subject_column=subject_column,
        body_column=body_column,
        label_columns=label_columns or None,
        min_examples_per_class=min_examples,
        validate=validate,
    )


def _show_training_log() -> None:
    """Epoch lines of training on stderr (unless logging was configured already)."""
    train_log = logging.getLogger("connector.model")
    if not train_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        train_log.addHandler(handler)
        train_log.setLevel(logging.INFO)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _load_config(path: Path | None) -> Any:
    return load_or_exit(path, defaults=True, report=echo_config_error)


# --------------------------------------------------------------------------- train

ColumnOption = Annotated[Optional[str], typer.Option()]


def _training_settings(cfg: Any, overrides: dict[str, Any]) -> Any:
    """``training`` with the command line's overrides, validated (exit 2 on an invalid value)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = cfg.training.model_copy(update=overrides)
        type(settings).model_validate(settings.model_dump())
    except Exception as exc:  # pydantic ValidationError
        raise _fail(f"invalid training option: {exc}") from None
    return settings


def _train_run(cfg: Any, settings: Any, data: Path, columns: dict[str, Any], validation: Path | None,
               base_model: Path | None, output: Path | None, device: str | None, console: Console) -> Any:
    """Load the data and fine-tune one model per field (exit 2 on bad data or a failed training)."""
    from connector.model.classifier import ModelLoadError
    from connector.model.data import DataError, load_labeled_file
    from connector.model.train import TrainingError, train_models

    try:
        labeled = _load_data(data, **columns, min_examples=settings.min_examples_per_class)
        valid = None
        if validation is not None:
            valid = load_labeled_file(
                validation, text_column=columns["text_column"], subject_column=columns["subject_column"],
                body_column=columns["body_column"], label_columns=columns["label_columns"] or None, validate=False,
            )
        console.print(
            f"[bold]data[/bold] {data}: {len(labeled)} examples, fields {', '.join(labeled.fields)}"
            + (f", {labeled.stats.get('duplicates_dropped', 0)} duplicates dropped" if labeled.stats.get("duplicates_dropped") else "")
        )
        return train_models(
            labeled,
            output_dir=output or cfg.models_dir,
            settings=settings,
            base_model=base_model or cfg.model.base_model,
            device=device or cfg.model.device,
            validation=valid,
            half_precision=cfg.model.half_precision,
        )
    except (DataError, TrainingError, ModelLoadError) as exc:
        raise _fail(str(exc)) from None


def _register_run(cfg: Any, run: Any, settings: Any, policy: str) -> list[Any]:
    """Register the run's models and activate them under ``policy`` (always, auto, never)."""
    from connector.model.classifier import ModelLoadError
    from connector.model.registry import RegistryError

    try:
        return _registry(cfg).add_run(run, activate=policy, epsilon=settings.promote_epsilon,
                                      min_gain=settings.promote_min_gain, keep=settings.keep_versions)
    except (RegistryError, ModelLoadError) as exc:
        raise _fail(str(exc)) from None


def _write_run_report(run: Any, data: Path, report: Path) -> dict[str, str]:
    from connector.model.evaluate import EvaluationReport, evaluation_from_dict, write_report

    rep = EvaluationReport(
        fields={f: evaluation_from_dict(m.metrics) for f, m in run.models.items()},
        baselines=run.baselines,
        data={"source": str(data), "examples": len(run.holdout), "split": "hold-out"},
    )
    return {k: str(v) for k, v in write_report(rep, report, title=f"Training {run.version}").items()}


def _print_run(console: Console, run: Any, result: dict[str, Any]) -> None:
    table = Table(title=f"model version {run.version} (hold-out: {len(run.holdout)} examples)")
    for col in ("field", "transformer macro-F1", "accuracy", "linear macro-F1", "linear accuracy", "threshold @P0.9", "activated"):
        table.add_column(col)
    for f, m in run.models.items():
        base = run.baselines.get(f)
        d = result["activation"][f]
        table.add_row(
            f,
            _fmt(m.metrics.get("macro_f1")),
            _fmt(m.metrics.get("accuracy")),
            _fmt(base.macro_f1 if base else None),
            _fmt(base.accuracy if base else None),
            _fmt(m.metrics.get("recommended_threshold"), 2),
            ("yes" if d["promoted"] else "no") + f" ({d['reason']})",
        )
    console.print(table)
    for f, m in run.models.items():
        t = m.training
        console.print(
            f"{f}: {m.path}  ({t.get('epochs_run')} epochs, best {t.get('best_epoch')}, "
            f"{t.get('samples_per_second')} samples/s, {t.get('wall_seconds')} s, peak {t.get('peak_rss_mb')} MiB, {t.get('device')})"
        )
    if "report" in result:
        console.print(f"report: {result['report']['markdown']}")


def train(
    data: Annotated[Path, typer.Argument(help="labelled tickets: CSV, JSON or JSON Lines")],
    text_column: Annotated[Optional[str], typer.Option(help="column holding the whole ticket text")] = None,
    subject_column: Annotated[Optional[str], typer.Option(help="column holding the subject")] = None,
    body_column: Annotated[Optional[str], typer.Option(help="column holding the body")] = None,
    label_column: Annotated[
        Optional[list[str]],
        typer.Option("--label-column", "-l", help="label column, repeatable; FIELD=COLUMN renames (queue=Topic_group)"),
    ] = None,
    validation: Annotated[Optional[Path], typer.Option(help="separate validation file (else an 80/20 split)")] = None,
    base_model: Annotated[Optional[Path], typer.Option(help="local Hugging Face model directory to fine-tune")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="models directory (default: model.dir)")] = None,
    config: ConfigOption = None,
    epochs: Annotated[Optional[int], typer.Option(help="overrides training.epochs")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="overrides training.max_length")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="overrides training.batch_size")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="overrides training.learning_rate")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] (default: model.device)")] = None,
    activate: Annotated[bool, typer.Option("--activate/--no-activate", help="activate when at least as good as the active model")] = True,
    force: Annotated[bool, typer.Option(help="activate even when worse than the active model")] = False,
    report: Annotated[Optional[Path], typer.Option(help="also write the evaluation report (JSON, Markdown, PNG) here")] = None,
    json_out: JsonOption = False,
) -> None:
    """Fine-tune one model per label field, compare with the linear baseline, register and activate."""
    cfg = _load_config(config)
    console = _console(json_out)
    _show_training_log()
    settings = _training_settings(cfg, {"epochs": epochs, "max_length": max_length, "batch_size": batch_size,
                                        "learning_rate": learning_rate})
    columns = {"text_column": text_column, "subject_column": subject_column, "body_column": body_column,
               "label_columns": label_column}
    run = _train_run(cfg, settings, data, columns, validation, base_model, output, device, console)
    decisions = _register_run(cfg, run, settings, "always" if force else ("auto" if activate else "never"))
    result = run.as_dict()
    result["activation"] = {d.field: d.as_dict() for d in decisions}
    if report is not None:
        result["report"] = _write_run_report(run, data, report)
    if json_out:
        _echo_json(result)
        return
    _print_run(console, run, result)


# --------------------------------------------------------------------------- evaluate


def _model_dirs(model_dir: Path) -> list[Path]:
    """One model directory, or the model directories inside ``model_dir`` (exit 2 when there are none)."""
    from connector.model.classifier import META_FILE

    if not model_dir.exists():
        raise _fail(f"model directory {model_dir} does not exist")
    if (model_dir / META_FILE).is_file() or (model_dir / "config.json").is_file():
        return [model_dir]
    dirs = sorted(p for p in model_dir.iterdir() if p.is_dir() and (p / META_FILE).is_file())
    if not dirs:
        raise _fail(f"{model_dir} is not a model directory (no {META_FILE} or config.json)")
    return dirs


def _evaluate_dirs(cfg: Any, dirs: list[Path], labeled: Any, field: str | None, device: str | None,
                   target_precision: float | None) -> dict[str, Any]:
    from connector.model.classifier import ModelLoadError
    from connector.model.data import DataError
    from connector.model.evaluate import evaluate_model_dir

    evaluations = {}
    try:
        for d in dirs:
            ev = evaluate_model_dir(
                d, labeled, field=field if len(dirs) == 1 else None, device=device or cfg.model.device,
                batch_size=cfg.model.batch_size, max_length=cfg.model.max_length, cpu_precision=cfg.model.cpu_precision,
                target_precision=target_precision or cfg.training.target_precision,
            )
            evaluations[ev.field] = ev
    except (DataError, ModelLoadError) as exc:
        raise _fail(str(exc)) from None
    return evaluations


def _print_evaluations(console: Console, data: Path, examples: int, evaluations: dict[str, Any]) -> None:
    table = Table(title=f"evaluation on {data} ({examples} examples)")
    for col in ("field", "model", "examples", "accuracy", "macro-F1", "threshold", "coverage"):
        table.add_column(col)
    for f, ev in evaluations.items():
        table.add_row(f, str(ev.model_version), str(ev.examples), _fmt(ev.accuracy), _fmt(ev.macro_f1),
                      _fmt(ev.recommended_threshold, 2), _fmt(ev.recommended_coverage, 3))
    console.print(table)


def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="a model directory (one field), or a directory of them")],
    data: Annotated[Path, typer.Argument(help="labelled tickets: CSV, JSON or JSON Lines")],
    text_column: ColumnOption = None,
    subject_column: ColumnOption = None,
    body_column: ColumnOption = None,
    label_column: Annotated[Optional[list[str]], typer.Option("--label-column", "-l", help="FIELD=COLUMN or COLUMN, repeatable")] = None,
    field: Annotated[Optional[str], typer.Option(help="the field the model predicts (default: from its metadata)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="report directory (default: <state_dir>/reports/<version>-<time>)")] = None,
    target_precision: Annotated[Optional[float], typer.Option(help="precision the recommended threshold aims at")] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Score a model on labelled data: accuracy, macro-F1, per class, confusion, coverage vs accuracy."""
    from connector.model.data import DataError
    from connector.model.evaluate import EvaluationReport, write_report

    cfg = _load_config(config)
    console = _console(json_out)
    dirs = _model_dirs(model_dir)
    try:
        labeled = _load_data(data, text_column, subject_column, body_column, label_column, 1, validate=False)
    except DataError as exc:
        raise _fail(str(exc)) from None
    evaluations = _evaluate_dirs(cfg, dirs, labeled, field, device, target_precision)
    version = next(iter(evaluations.values())).model_version or "model"
    out = report or (cfg.state_dir / "reports" / f"{version}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    rep = EvaluationReport(fields=evaluations, data={"source": str(data), "examples": len(labeled)})
    paths = write_report(rep, out, title=f"Evaluation of {version} on {data.name}")
    if json_out:
        payload = rep.as_dict()
        payload["report"] = {k: str(v) for k, v in paths.items()}
        _echo_json(payload)
        return
    _print_evaluations(console, data, len(labeled), evaluations)
    console.print(f"report: {paths['markdown']}")


# --------------------------------------------------------------------------- models


def models_list(
    field: Annotated[Optional[str], typer.Option(help="only this field")] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Registered model versions, newest first; * marks the active one."""
    infos = _registry(_load_config(config)).list(field)
    if json_out:
        _echo_json({"models": [i.as_dict() for i in infos]})
        return
    table = Table(title="model versions")
    for col in ("", "field", "version", "kind", "macro-F1", "accuracy", "created", "path"):
        table.add_column(col)
    for i in infos:
        table.add_row("*" if i.active else "", i.field, i.version, i.kind, _fmt(i.metrics.get("macro_f1")),
                      _fmt(i.metrics.get("accuracy")), i.created_at.strftime("%Y-%m-%d %H:%M"), str(i.path))
    Console().print(table)
    if not infos:
        typer.echo("no model registered yet: run helpdesk-connector train DATA")


def _switch_active(config: Path | None, json_out: bool, done: str, switch: Callable[[Any], list[Any]]) -> None:
    """Change the active versions with ``switch(registry)`` and report each field as ``done``."""
    from connector.model.classifier import ModelLoadError
    from connector.model.registry import RegistryError

    cfg = _load_config(config)
    try:
        infos = switch(_registry(cfg))
    except (RegistryError, ModelLoadError) as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _echo_json({"active": [i.as_dict() for i in infos]})
        return
    for i in infos:
        typer.echo(f"{i.field}: {done.format(version=i.version)}")


def models_activate(
    version: Annotated[str, typer.Argument(help="the version to serve (see models list)")],
    field: Annotated[Optional[str], typer.Option(help="only this field (default: every field with that version)")] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Serve VERSION; a running daemon switches to it without a restart."""
    _switch_active(config, json_out, "{version} is active",
                   lambda registry: registry.activate(version, field=field, reason="activated by the CLI"))


def models_rollback(
    field: Annotated[Optional[str], typer.Option(help="only this field (default: every active field)")] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Go back to the version that was active before the current one."""
    _switch_active(config, json_out, "rolled back to {version}",
                   lambda registry: registry.rollback(field, reason="rollback (CLI)"))


def models_history(
    field: Annotated[Optional[str], typer.Option()] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Activations, oldest first."""
    rows = _registry(_load_config(config)).history(field)
    if json_out:
        _echo_json({"activations": rows})
        return
    for r in rows:
        typer.echo(f"{r['activated_at']}  {r['field']}: {r['previous_version'] or '-'} -> {r['version'] or '-'}  ({r['reason']})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    models_app = typer.Typer(help="List, activate and roll back model versions.", no_args_is_help=True)
    app.add_typer(models_app, name="models")
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    models_app.command("list")(models_list)
    models_app.command("activate")(models_activate)
    models_app.command("rollback")(models_rollback)
    models_app.command("history")(models_history)
