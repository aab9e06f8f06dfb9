"""What ``helpdesk-connector status`` shows about the learning loop.

* per system and field/value: the override rate (share of the daemon's writes
  a person changed) and per system the share of tickets routed automatically;
* the active model per field: version, when it was trained and activated, on
  how many examples, its scores;
* the label distribution of recently resolved tickets against the data the
  active model was trained on (drift, as total variation distance: 0 same,
  1 disjoint);
* stored examples, what is new since the last retraining, the latest jobs.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from connector.config import AppConfig
from connector.learning.corrections import automatic_share, override_rates
from connector.learning.retrain import JOB_KIND, latest_jobs, new_since_last_retrain
from connector.store.db import Store, as_utc, utcnow
from connector.store.tables import TrainingExample, TrainingJob
from connector.training.jobs import job_kind


def _distribution(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def total_variation(a: dict[str, int], b: dict[str, int]) -> float | None:
    """Half the L1 distance between two label distributions (None when either is empty)."""
    pa, pb = _distribution(a), _distribution(b)
    if not pa or not pb:
        return None
    return 0.5 * sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in set(pa) | set(pb))


def _training_counts(store: Store, version: str, field: str, fallback: dict[str, Any]) -> tuple[dict[str, int], str]:
    """Label counts the version was trained on: from its retraining job, else its validation support."""
    with store.session() as session:
        for job in session.scalars(
            select(TrainingJob).where(TrainingJob.state == "succeeded").order_by(TrainingJob.id.desc()).limit(200)
        ):
            m = job.metrics or {}
            if job_kind(job.params) == JOB_KIND and m.get("version") == version:
                return {k: int(v) for k, v in (m.get("label_counts") or {}).get(field, {}).items()}, "training data"
    per_class = fallback.get("per_class") or {}
    counts = {k: int(v.get("support", 0)) for k, v in per_class.items() if isinstance(v, dict) and "support" in v}
    return counts, "validation set"


def _recent_labels(config: AppConfig, store: Store, since: Any) -> dict[str, Counter[str]]:
    """Label counts per field of the examples resolved (or stored) since ``since``."""
    with store.session() as session:
        rows = session.execute(
            select(TrainingExample.labels).where(func.coalesce(TrainingExample.resolved_at, TrainingExample.created_at) >= since)
        ).all()
    recent: dict[str, Counter[str]] = {f: Counter() for f in config.model.fields}
    for (labels,) in rows:
        for f in config.model.fields:
            value = (labels or {}).get(f)
            if value:
                recent[f][str(value)] += 1
    return recent


def _corrections(rates: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per system and field: automatic writes, how many a person corrected, the rate."""
    corrections: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rates:
        per_field = corrections.setdefault(r["system"], {}).setdefault(r["field"], {"applied": 0, "corrected": 0})
        per_field["applied"] += r["applied"]
        per_field["corrected"] += r["corrected"]
    for per_system in corrections.values():
        for per_field in per_system.values():
            per_field["rate"] = round(per_field["corrected"] / per_field["applied"], 4) if per_field["applied"] else 0.0
    return corrections


def _models_and_drift(config: AppConfig, store: Store, recent: dict[str, Counter[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    from connector.model.registry import ModelRegistry

    models: dict[str, Any] = {}
    drift: dict[str, Any] = {}
    for name, info in ModelRegistry(store, config.models_dir).active().items():
        trained_on, basis = _training_counts(store, info.version, name, info.metrics)
        models[name] = {
            "version": info.version,
            "kind": info.kind,
            "created_at": info.created_at.isoformat(),
            "activated_at": info.activated_at.isoformat() if info.activated_at else None,
            "base_model": info.base_model,
            "data_fingerprint": info.data_fingerprint,
            "train_examples": info.training.get("train_examples"),
            "macro_f1": info.metrics.get("macro_f1"),
            "accuracy": info.metrics.get("accuracy"),
            "recommended_threshold": info.metrics.get("recommended_threshold"),
        }
        recent_counts = dict(recent.get(name, {}))
        tv = total_variation(recent_counts, trained_on)
        drift[name] = {
            "recent_tickets": sum(recent_counts.values()),
            "window_days": config.learning.drift_window_days,
            "compared_with": basis,
            "total_variation": None if tv is None else round(tv, 4),
            "recent": {k: round(v, 4) for k, v in sorted(_distribution(recent_counts).items())},
            "trained": {k: round(v, 4) for k, v in sorted(_distribution(trained_on).items())},
        }
    return models, drift


def learning_status(config: AppConfig, store: Store) -> dict[str, Any]:
    now = utcnow()
    with store.session() as session:
        rates = [r.as_dict() for r in override_rates(session)]
        shares = automatic_share(session)
        stored = session.scalar(select(func.count()).select_from(TrainingExample)) or 0
        held = session.scalar(select(func.count()).select_from(TrainingExample).where(TrainingExample.is_eval.is_(True))) or 0
    recent = _recent_labels(config, store, now - timedelta(days=config.learning.drift_window_days))
    models, drift = _models_and_drift(config, store, recent)
    return {
        "learning_enabled": config.learning.enabled,
        "automatic_share": shares,
        "corrections": _corrections(rates),
        "override_rates": rates,
        "examples": {"stored": int(stored), "held_apart": int(held), "new_since_last_retrain": new_since_last_retrain(store)},
        "active_models": models,
        "drift": drift,
        "retraining_jobs": latest_jobs(store),
        "generated_at": as_utc(now).isoformat(),  # type: ignore[union-attr]
    }


def render_text(status: dict[str, Any]) -> str:
    """A compact plain-text rendering for the terminal."""
    lines = ["learning loop" + ("" if status["learning_enabled"] else " (disabled)")]
    for system, s in status["automatic_share"].items():
        lines.append(f"  {system}: {s['automatic']}/{s['decided']} decided tickets routed automatically ({s['share']:.1%})")
    for system, per_field in status["corrections"].items():
        for field_name, c in per_field.items():
            lines.append(
                f"  {system} {field_name}: {c['corrected']} of {c['applied']} automatic writes corrected ({c['rate']:.1%})"
            )
    for r in status["override_rates"]:
        if r["corrected"]:
            lines.append(f"    {r['system']} {r['field']}={r['value']}: {r['corrected']}/{r['applied']} overridden ({r['rate']:.1%})")
    ex = status["examples"]
    new = ex["new_since_last_retrain"]
    lines.append(
        f"  examples: {ex['stored']} stored ({ex['held_apart']} held apart); since the last retraining "
        f"{new['examples']} new, {new['corrections']} corrections"
    )
    for name, m in status["active_models"].items():
        f1 = m.get("macro_f1")
        lines.append(
            f"  model {name}: {m['version']} trained {m['created_at'][:19]}"
            + (f" on {m['train_examples']} examples" if m.get("train_examples") else "")
            + (f", macro-F1 {f1:.3f}" if isinstance(f1, (int, float)) else "")
            + (f", active since {m['activated_at'][:19]}" if m.get("activated_at") else "")
        )
        d = status["drift"].get(name) or {}
        if d.get("total_variation") is not None:
            lines.append(
                f"    drift: {d['recent_tickets']} tickets of the last {d['window_days']} days vs the {d['compared_with']}: "
                f"total variation {d['total_variation']:.3f}"
            )
        elif d:
            lines.append(
                f"    drift: not measurable ({d['recent_tickets']} tickets resolved in the last {d['window_days']} days; "
                f"label counts of the training data {'known' if d['trained'] else 'unknown'})"
            )
    for job in status["retraining_jobs"][:3]:
        promoted = ", ".join(f"{k}: {'promoted' if v else 'kept champion'}" for k, v in (job.get("promoted") or {}).items())
        lines.append(
            f"  retraining #{job['id']} ({job['trigger']}) {job['state']}"
            + (f" [{promoted}]" if promoted else "")
            + (f": {job['error']}" if job.get("error") else "")
        )
    return "\n".join(lines)
