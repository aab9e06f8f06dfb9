"""The ``retrain`` recipe: the learning loop's champion/challenger retraining.

Trains the challenger on the stored examples (plus the optional base dataset), scores champion,
challenger and the linear baseline on the fixed held-apart set, writes the evaluation report and
promotes per field only under the one promotion rule (:mod:`.promotion`).  Until that last step
nothing it does is visible to the daemon.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.config import AppConfig
from connector.learning.dataset import NotEnoughData, TrainingSets, build_training_sets, eval_count_per_field
from connector.training.recipes.promotion import registry_for

if TYPE_CHECKING:
    from connector.training.worker import JobContext

log = logging.getLogger(__name__)


def retrain_champion(ctx: JobContext) -> dict[str, Any]:
    """Train, score, report, promote; the job's metrics."""
    from connector.model.train import train_models

    config, params, started = ctx.config, ctx.spec.params, time.perf_counter()
    base = params.get("base_dataset")
    sets = build_training_sets(config, ctx.store, base_dataset=Path(base) if base else None)
    fields = _fields_to_train(config, sets, force=bool(params.get("force")))
    ctx.update(progress=0.05, params={**params, "kind": "retrain", "data": sets.info})
    run = train_models(
        sets.train, fields, output_dir=config.models_dir, settings=config.training, base_model=config.model.base_model,
        device=config.model.device, progress=lambda fraction, _message: ctx.progress(0.05 + 0.8 * fraction),
        cancel=ctx.cancel, half_precision=config.model.half_precision, show_progress=False, baseline=False,
    )
    ctx.check_cancelled()
    ctx.update(progress=0.88)
    scores = _score(config, ctx, sets, fields, run)
    ctx.check_cancelled()
    fields_out = _promote(config, ctx, sets, fields, run, scores, force=bool(params.get("force")))
    _append_comparison(Path(scores["report"]) / "report.md", fields_out)
    return {
        "kind": "retrain",
        "version": run.version,
        "fields": fields_out,
        "skipped_fields": sorted(set(config.model.fields) - set(fields)),
        **{key: sets.info[key] for key in ("train_examples", "eval_examples", "corrected_examples", "label_counts", "data_fingerprint")},
        "report": scores["report"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _fields_to_train(config: AppConfig, sets: TrainingSets, *, force: bool) -> list[str]:
    if not sets.fields:
        raise NotEnoughData(
            f"nothing to train: no label field has two classes with at least "
            f"{config.training.min_examples_per_class} examples ({sets.info['train_examples']} training examples)"
        )
    eval_counts = eval_count_per_field(sets)
    fields = [f for f in sets.fields if force or eval_counts.get(f, 0) >= config.learning.min_eval_examples]
    if not fields:
        raise NotEnoughData(
            f"the held-apart evaluation set is too small ({eval_counts}; at least "
            f"{config.learning.min_eval_examples} per field are needed to compare models; --force trains anyway)"
        )
    return fields


def _evaluate(path: Path, sets: TrainingSets, field: str, config: AppConfig) -> Any:
    from connector.model.evaluate import evaluate_model_dir

    return evaluate_model_dir(
        path, sets.eval, field=field, device=config.model.device, batch_size=config.model.batch_size,
        max_length=config.model.max_length, cpu_precision=config.model.cpu_precision,
        target_precision=config.training.target_precision,
    )


def _baselines(config: AppConfig, sets: TrainingSets, fields: list[str]) -> dict[str, Any]:
    """The linear baseline, fitted on the same training data and scored on the same held-apart set."""
    from connector.model.baseline import train_baseline

    out = {}
    for name in fields:
        try:
            out[name] = train_baseline(sets.train, name, validation=sets.eval, target_precision=config.training.target_precision).evaluation
        except Exception as exc:  # the baseline is informative only
            log.warning("linear baseline of %s failed: %s", name, exc)
    return out


def _score(config: AppConfig, ctx: JobContext, sets: TrainingSets, fields: list[str], run: Any) -> dict[str, Any]:
    """Challenger, champion and baseline evaluations, and the report written from them."""
    from connector.model.evaluate import EvaluationReport, write_report

    baselines = _baselines(config, sets, fields)
    champions = registry_for(config, ctx.store).active()
    challengers, champion_evals = {}, {}
    for name in fields:
        challengers[name] = _evaluate(run.models[name].path, sets, name, config)
        champion = champions.get(name)
        if champion is not None and champion.kind == "transformer":
            try:
                champion_evals[name] = _evaluate(champion.path, sets, name, config)
            except Exception as exc:  # a broken champion is the registry's call
                log.warning("active %s model %s cannot be evaluated: %s", name, champion.version, exc)
    report_dir = config.state_dir / "reports" / f"retrain-{ctx.job_id}-{run.version}"
    data = {"source": sets.eval.source, "examples": len(sets.eval), **{k: v for k, v in sets.info.items() if k != "label_counts"}}
    report = EvaluationReport(fields=challengers, baselines=baselines, data=data)
    write_report(report, report_dir, title=f"Retraining {ctx.job_id}: challenger {run.version} on the held-apart set")
    return {"challengers": challengers, "champions": champion_evals, "baselines": baselines, "report": str(report_dir)}


def _promote(
    config: AppConfig, ctx: JobContext, sets: TrainingSets, fields: list[str], run: Any, scores: dict[str, Any], *, force: bool
) -> dict[str, Any]:
    registry = registry_for(config, ctx.store)
    out: dict[str, Any] = {}
    for name in fields:
        d = registry.promote_if_better(
            run.models[name], sets.eval, epsilon=config.training.promote_epsilon,
            min_gain=config.training.promote_min_gain, force=force, reason=f"retraining job {ctx.job_id}",
        )
        champion = scores["champions"].get(name)
        baseline = scores["baselines"].get(name)
        out[name] = {
            "challenger": {"version": run.version, **scores["challengers"][name].summary()},
            "champion": (
                {"version": d.champion_version, **champion.summary()} if champion is not None
                else ({"version": d.champion_version, "macro_f1": d.champion_macro_f1} if d.champion_version else None)
            ),
            "linear_baseline": baseline.summary() if baseline is not None else None,
            "promoted": d.promoted,
            "reason": d.reason,
        }
    registry.prune(config.training.keep_versions)
    return out


def _append_comparison(path: Path, fields: dict[str, Any]) -> None:
    lines = [
        "",
        "## Champion vs challenger on the held-apart set",
        "",
        "| field | champion | champion macro-F1 | challenger | challenger macro-F1 | promoted | reason |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for name, f in fields.items():
        champ = f.get("champion") or {}
        chal = f["challenger"]
        champ_f1 = champ.get("macro_f1")
        lines.append(
            f"| {name} | {champ.get('version') or '–'} | {'–' if champ_f1 is None else f'{champ_f1:.4f}'} "
            f"| {chal['version']} | {chal['macro_f1']:.4f} | {'yes' if f['promoted'] else 'no'} | {f['reason']} |"
        )
    with path.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
