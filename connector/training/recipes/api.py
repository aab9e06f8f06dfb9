"""The ``api`` recipe: train the fields of an uploaded dataset, register, activate as requested."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.training.recipes.promotion import register_and_activate

if TYPE_CHECKING:
    from connector.training.worker import JobContext


def train_dataset(ctx: JobContext) -> dict[str, Any]:
    from connector.api.datasets import get_dataset, load_dataset
    from connector.model.train import train_models

    params, config = ctx.spec.params, ctx.config
    training = config.training
    if params.get("epochs") is not None:
        training = training.model_copy(update={"epochs": params["epochs"]})
    dataset = get_dataset(ctx.store, params["dataset_id"])
    if dataset is None:
        raise LookupError(f"dataset {params['dataset_id']} no longer exists")
    data = load_dataset(dataset.path, params["fields"], min_examples_per_class=training.min_examples_per_class)
    ctx.progress(0.0, f"loaded {len(data)} examples")
    result = train_models(
        data,
        params["fields"],
        output_dir=config.models_dir,
        settings=training,
        base_model=params.get("base_model") or config.model.base_model,
        device=config.model.device,
        progress=ctx.progress,
        cancel=ctx.cancel,
        half_precision=config.model.half_precision,
        show_progress=False,
    )
    ctx.check_cancelled()
    metrics: dict[str, Any] = result.as_dict()
    metrics["activation"] = register_and_activate(
        config, ctx.store, result, mode=params.get("activate", "if_better"), training=training
    )
    return metrics
