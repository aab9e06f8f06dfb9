"""The retraining worker process: ``python -m connector.learning.worker SPEC``.

Started by :func:`connector.learning.retrain.retrain` with a lower priority.
It holds the training file lock for its whole life, records its progress in
its ``training_jobs`` row, trains the challenger on the stored examples (plus
the optional base dataset), scores champion and challenger on the fixed
held-apart set, writes the evaluation report, and promotes per field only
under the registry's rule.  Until that last step nothing it does is visible
to the daemon; SIGTERM cancels cleanly, SIGKILL leaves at most an unused,
unregistered directory.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from connector.config import AppConfig, parse_config
from connector.learning.dataset import NotEnoughData, TrainingSets, build_training_sets, eval_count_per_field
from connector.learning.retrain import JOB_KIND, settle
from connector.store.db import Store, utcnow
from connector.store.tables import TrainingJob
from connector.training_lock import training_lock_path

log = logging.getLogger("connector.learning.worker")


class Cancelled(Exception):
    pass


def _update(store: Store, job_id: int, **values: Any) -> None:
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            return
        for key, value in values.items():
            setattr(job, key, value)


def _evaluate(path: Path, sets: TrainingSets, field: str, config: AppConfig) -> Any:
    from connector.model.evaluate import evaluate_model_dir

    return evaluate_model_dir(
        path,
        sets.eval,
        field=field,
        device=config.model.device,
        batch_size=config.model.batch_size,
        max_length=config.model.max_length,
        cpu_precision=config.model.cpu_precision,
        target_precision=config.training.target_precision,
    )


def run_job(config: AppConfig, store: Store, job_id: int, *, force: bool, base_dataset: Path | None, cancel: threading.Event) -> dict[str, Any]:
    """Train, score, report, promote; returns the job's metrics (raises on failure)."""
    from connector.model.baseline import train_baseline
    from connector.model.evaluate import EvaluationReport, write_report
    from connector.model.registry import ModelRegistry
    from connector.model.train import train_models

    started = time.perf_counter()
    sets = build_training_sets(config, store, base_dataset=base_dataset)
    eval_counts = eval_count_per_field(sets)
    fields = [f for f in sets.fields if force or eval_counts.get(f, 0) >= config.learning.min_eval_examples]
    if not sets.fields:
        raise NotEnoughData(
            f"nothing to train: no label field has two classes with at least "
            f"{config.training.min_examples_per_class} examples ({sets.info['train_examples']} training examples)"
        )
    if not fields:
        raise NotEnoughData(
            f"the held-apart evaluation set is too small ({eval_counts}; at least "
            f"{config.learning.min_eval_examples} per field are needed to compare models; --force trains anyway)"
        )
    _update(store, job_id, progress=0.05, params={**_params(store, job_id), "data": sets.info})

    def progress(fraction: float, message: str) -> None:
        _update(store, job_id, progress=round(0.05 + 0.8 * fraction, 3))
        if cancel.is_set():
            raise Cancelled("cancelled")

    output = config.models_dir
    run = train_models(
        sets.train,
        fields,
        output_dir=output,
        settings=config.training,
        base_model=config.model.base_model,
        device=config.model.device,
        progress=progress,
        cancel=cancel,
        half_precision=config.model.half_precision,
        show_progress=False,
        baseline=False,
    )
    if cancel.is_set():
        raise Cancelled("cancelled")
    _update(store, job_id, progress=0.88)

    # the linear baseline, fitted on the same training data and scored on the same held-apart set
    baselines = {}
    for name in fields:
        try:
            baselines[name] = train_baseline(
                sets.train, name, validation=sets.eval, target_precision=config.training.target_precision
            ).evaluation
        except Exception as exc:  # the baseline is informative only
            log.warning("linear baseline of %s failed: %s", name, exc)

    registry = ModelRegistry.from_config(config, store)
    champions = registry.active()
    challenger_evals = {}
    champion_evals = {}
    for name in fields:
        challenger_evals[name] = _evaluate(run.models[name].path, sets, name, config)
        champion = champions.get(name)
        if champion is not None and champion.kind == "transformer":
            try:
                champion_evals[name] = _evaluate(champion.path, sets, name, config)
            except Exception as exc:  # a broken champion is the registry's call
                log.warning("active %s model %s cannot be evaluated: %s", name, champion.version, exc)

    report_dir = config.state_dir / "reports" / f"retrain-{job_id}-{run.version}"
    report = EvaluationReport(
        fields=challenger_evals,
        baselines=baselines,
        data={"source": sets.eval.source, "examples": len(sets.eval), **{k: v for k, v in sets.info.items() if k != "label_counts"}},
    )
    write_report(report, report_dir, title=f"Retraining {job_id}: challenger {run.version} on the held-apart set")

    if cancel.is_set():
        raise Cancelled("cancelled")
    decisions = {}
    for name in fields:
        decisions[name] = registry.promote_if_better(
            run.models[name],
            sets.eval,
            epsilon=config.training.promote_epsilon,
            min_gain=config.training.promote_min_gain,
            force=force,
            reason=f"retraining job {job_id}",
        )
    registry.prune(config.training.keep_versions)

    fields_out: dict[str, Any] = {}
    for name in fields:
        d = decisions[name]
        fields_out[name] = {
            "challenger": {"version": run.version, **challenger_evals[name].summary()},
            "champion": (
                {"version": d.champion_version, **champion_evals[name].summary()}
                if name in champion_evals
                else ({"version": d.champion_version, "macro_f1": d.champion_macro_f1} if d.champion_version else None)
            ),
            "linear_baseline": baselines[name].summary() if name in baselines else None,
            "promoted": d.promoted,
            "reason": d.reason,
        }
    _append_comparison(report_dir / "report.md", fields_out)
    return {
        "kind": JOB_KIND,
        "version": run.version,
        "fields": fields_out,
        "skipped_fields": sorted(set(config.model.fields) - set(fields)),
        "train_examples": sets.info["train_examples"],
        "eval_examples": sets.info["eval_examples"],
        "corrected_examples": sets.info["corrected_examples"],
        "label_counts": sets.info["label_counts"],
        "data_fingerprint": sets.info["data_fingerprint"],
        "report": str(report_dir),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _params(store: Store, job_id: int) -> dict[str, Any]:
    with store.session() as session:
        job = session.get(TrainingJob, job_id)
        return dict(job.params or {}) if job is not None else {}


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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m connector.learning.worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(spec["config"], source=args[0])
    job_id = int(spec["job_id"])
    store = Store(config.store_url)
    cancel = threading.Event()

    def on_term(signum: int, _frame: Any) -> None:
        log.info("signal %d: cancelling training job %d", signum, job_id)
        cancel.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    lock = FileLock(str(training_lock_path(config.state_dir)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        settle(store, job_id, "cancelled", error="another training is running (training lock held)")
        return 0
    try:
        _update(store, job_id, state="running", pid=os.getpid(), started_at=utcnow(), progress=0.0)
        try:
            from connector.model.train import TrainingCancelled

            metrics = run_job(
                config,
                store,
                job_id,
                force=bool(spec.get("force")),
                base_dataset=Path(spec["base_dataset"]) if spec.get("base_dataset") else None,
                cancel=cancel,
            )
        except (Cancelled, TrainingCancelled):
            settle(store, job_id, "cancelled", error="cancelled; the active model is unchanged")
            return 0
        except NotEnoughData as exc:
            settle(store, job_id, "failed", error=str(exc))
            return 0
        except Exception as exc:
            log.exception("retraining job %d failed", job_id)
            settle(store, job_id, "failed", error=f"{type(exc).__name__}: {exc}; the active model is unchanged")
            return 1
        _update(store, job_id, progress=1.0)
        settle(store, job_id, "succeeded", metrics=metrics)
        promoted = [name for name, f in metrics["fields"].items() if f["promoted"]]
        log.info("retraining job %d succeeded; promoted: %s", job_id, ", ".join(promoted) or "none")
        return 0
    finally:
        lock.release()
        store.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
