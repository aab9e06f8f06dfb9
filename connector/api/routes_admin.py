"""Admin calls: upload training data, train, follow and cancel jobs, list/activate/roll back models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Body, Depends, Path as PathParam, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from connector.api.auth import Principal, require
from connector.api.datasets import UploadSpec, get_dataset, parse_upload, save_dataset
from connector.api.errors import ApiError
from connector.api.jobs import JobConflict, JobFinished, JobNotFound
from connector.api.model_admin import ModelOps
from connector.api.schemas import (
    MAX_ID,
    ActivateRequest,
    DatasetOut,
    ErrorOut,
    ModelChangeOut,
    ModelsOut,
    RollbackRequest,
    TrainAccepted,
    TrainingJobOut,
    TrainRequest,
)
from connector.model.data import DataError, FileFormat
from connector.model.registry import RegistryError
from connector.store.tables import TrainingJob

if TYPE_CHECKING:
    from connector.api.app import ApiContext

router = APIRouter(tags=["admin"])

_AUTH = {
    401: {"model": ErrorOut, "description": "missing or invalid token"},
    403: {"model": ErrorOut, "description": "the token lacks the admin scope"},
}

CSV_TYPES = {"text/csv", "application/csv", "text/comma-separated-values"}
JSONL_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines"}
JSON_TYPES = {"application/json"}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _format_of_part(upload: UploadFile) -> FileFormat:
    name = (upload.filename or "").lower()
    ctype = (upload.content_type or "").split(";", 1)[0].strip().lower()
    if name.endswith((".jsonl", ".ndjson")) or ctype in JSONL_TYPES:
        return "jsonl"
    if name.endswith(".json") or ctype in JSON_TYPES:
        return "json"
    return "csv"


async def _read_upload(request: Request) -> tuple[bytes, FileFormat, str]:
    """The body's bytes, its format and a name, from a raw CSV/JSONL body or a multipart file."""
    media = _media_type(request)
    if media in CSV_TYPES:
        return await request.body(), "csv", "upload.csv"
    if media in JSONL_TYPES:
        return await request.body(), "jsonl", "upload.jsonl"
    if media in JSON_TYPES:
        return await request.body(), "json", "upload.json"
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=20)
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from None
        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
        if not uploads:
            raise ApiError(400, "bad_request", "the multipart body has no file part (use a field named 'file')")
        upload = form.get("file") if isinstance(form.get("file"), UploadFile) else uploads[0]
        assert isinstance(upload, UploadFile)
        content = await upload.read()
        await form.close()
        return content, _format_of_part(upload), Path(upload.filename or "upload.csv").name
    raise ApiError(
        415,
        "unsupported_media_type",
        "send text/csv, application/x-ndjson (JSON lines), application/json or multipart/form-data "
        f"(got {media or 'no Content-Type'})",
    )


def _dataset_out(row: object) -> DatasetOut:
    return DatasetOut.model_validate(row, from_attributes=True)


@router.post(
    "/train-data",
    status_code=201,
    response_model=DatasetOut,
    responses={
        **_AUTH,
        400: {"model": ErrorOut, "description": "the data is invalid (line and problem named)"},
        413: {"model": ErrorOut, "description": "larger than api.max_body_bytes"},
        415: {"model": ErrorOut, "description": "unsupported Content-Type"},
    },
    summary="Upload labelled training data",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
        }
    },
)
async def upload_train_data(
    request: Request,
    _who: Principal = Depends(require("admin")),
    name: Annotated[str | None, Query(max_length=200, description="A name for the dataset")] = None,
    text_column: Annotated[str | None, Query(max_length=200)] = None,
    subject_column: Annotated[str | None, Query(max_length=200)] = None,
    body_column: Annotated[str | None, Query(max_length=200)] = None,
    label_column: Annotated[
        list[str] | None,
        Query(max_length=16, description="Label columns: 'queue', or 'field=Column' (repeatable)"),
    ] = None,
) -> DatasetOut:
    """The classic call: a CSV body (``Content-Type: text/csv``) with a text column (``text``, or ``subject`` and
    ``body``) and label columns (``queue``, ``priority``); also JSON lines or a multipart file upload.
    The data is validated (400 names the line and the problem), stored, and its id, row count and label counts
    are answered."""
    content, fmt, filename = await _read_upload(request)
    if not content.strip():
        raise ApiError(400, "invalid_data", "the body is empty", details={"problems": []})
    ctx = request.app.state.ctx
    labels = None
    if label_column:
        labels = {}
        for item in label_column:
            field, _, column = item.partition("=")
            labels[field.strip()] = (column or field).strip()
        if not all(labels) or not all(labels.values()):
            raise ApiError(400, "bad_request", "label_column must be 'column' or 'field=column'")
    spec = UploadSpec(fmt, filename, text_column, subject_column, body_column, labels)
    try:
        data = await asyncio.to_thread(
            parse_upload, content, spec, min_examples_per_class=ctx.config.training.min_examples_per_class
        )
    except DataError as exc:
        problems = [p.as_dict() for p in exc.problems]
        raise ApiError(
            400,
            "invalid_data",
            str(exc.problems[0]) if len(exc.problems) == 1 else str(exc),
            details={"problems": problems},
        ) from None
    row = await asyncio.to_thread(save_dataset, ctx.config, ctx.store, data, name=name or filename)
    return _dataset_out(row)


# --------------------------------------------------------------------------- training


def _job_out(job: TrainingJob) -> TrainingJobOut:
    return TrainingJobOut(
        job_id=job.id,
        state=job.state,  # type: ignore[arg-type]
        trigger=job.trigger,
        dataset_id=job.dataset_id,
        params=job.params or {},
        progress=round(job.progress or 0.0, 4),
        metrics=job.metrics or {},
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _wants_async(request: Request, wait: bool | None) -> bool:
    """``?wait=false``, or ``Prefer: respond-async`` (RFC 7240) when ``wait`` is not given."""
    if wait is not None:
        return not wait
    preferences = request.headers.get("prefer", "").split(",")
    return any(p.split(";", 1)[0].strip().lower() == "respond-async" for p in preferences)


@router.post(
    "/train",
    status_code=200,
    response_model=TrainingJobOut,
    responses={
        **_AUTH,
        202: {"model": TrainAccepted, "description": "started, asynchronously or still running when the wait ended"},
        400: {"model": ErrorOut, "description": "no dataset, unknown field or base model"},
        404: {"model": ErrorOut, "description": "no such dataset"},
        409: {"model": ErrorOut, "description": "a training job is already running"},
    },
    summary="Train: waits for the job unless asked not to (Prefer: respond-async or ?wait=false)",
)
async def start_training(
    request: Request,
    body: Annotated[TrainRequest | None, Body()] = None,
    wait: Annotated[
        bool | None,
        Query(description="false: answer 202 at once (as Prefer: respond-async); default: wait up to api.train_wait_s"),
    ] = None,
    _who: Principal = Depends(require("admin")),
) -> JSONResponse:
    """The classic call has no body: train the configured fields on the latest dataset. An optional JSON body names
    the dataset, the fields, the base model, the epochs and whether to activate the result.

    Training runs in a separate process. By default the call waits until the job ended and its models (if
    activated) are in service, then answers 200 with the job (``state`` succeeded, failed or cancelled), so a
    classify right after it uses the new model; after ``api.train_wait_s`` it answers 202 with the job and its
    status URL instead (the job goes on). ``Prefer: respond-async`` or ``?wait=false``: 202 at once."""
    ctx = request.app.state.ctx
    job_id = await _start_job(ctx, body or TrainRequest())
    url = request.url_for("get_training_job", job_id=str(job_id)).path
    headers = {"Location": url}
    if _wants_async(request, wait):
        if wait is None:
            headers["Preference-Applied"] = "respond-async"
        answer = TrainAccepted(job_id=job_id, state="queued", status_url=url)
        return JSONResponse(answer.model_dump(exclude_none=True), status_code=202, headers=headers)
    limit = ctx.config.api.train_wait_s
    settled = await ctx.jobs.wait_settled(job_id, limit)
    job = _job_out(await asyncio.to_thread(_load_job, request, job_id))
    if settled:
        return JSONResponse(job.model_dump(mode="json"), status_code=200, headers=headers)
    message = f"training job {job_id} is still running after {limit:g} s (api.train_wait_s); follow it at {url}"
    answer = TrainAccepted(job_id=job_id, state=_settling_state(job.state), status_url=url, message=message)
    return JSONResponse(answer.model_dump(exclude_none=True), status_code=202, headers=headers)


def _settling_state(state: str) -> str:
    # a job whose row already says succeeded is answered running until its models are in service
    return "running" if state == "succeeded" else state


async def _start_job(ctx: ApiContext, body: TrainRequest) -> int:
    """Check the request against its dataset and start the job; its id (ApiError 400/404/409 otherwise)."""
    dataset = await asyncio.to_thread(get_dataset, ctx.store, body.dataset_id)
    if dataset is None:
        if body.dataset_id is None:
            raise ApiError(400, "no_dataset", "no training data uploaded yet: POST /api/v1/train-data first")
        raise ApiError(404, "not_found", f"no dataset {body.dataset_id}")
    available = [f for f, counts in (dataset.label_counts or {}).items() if counts]
    if body.fields:
        unknown = [f for f in body.fields if f not in available]
        if unknown:
            raise ApiError(400, "unknown_field", f"dataset {dataset.id} has no labels for {', '.join(unknown)} (has: {', '.join(available) or 'none'})")
        fields = list(dict.fromkeys(body.fields))
    else:
        fields = [f for f in ctx.config.model.fields if f in available]
        if not fields:
            raise ApiError(
                400,
                "unknown_field",
                f"dataset {dataset.id} has none of the configured fields {', '.join(ctx.config.model.fields)} "
                f"(has: {', '.join(available) or 'none'}); name fields in the body",
            )
    base_model = body.base_model
    if base_model is not None and not Path(base_model).is_dir():
        raise ApiError(400, "unknown_base_model", "base_model is not a model directory on the server")
    if base_model is None and ctx.config.model.base_model is not None:
        base_model = str(ctx.config.model.base_model)
    try:
        return await ctx.jobs.start(
            dataset_id=dataset.id,
            fields=fields,
            base_model=base_model,
            epochs=body.epochs,
            activate=body.activate,
        )
    except JobConflict as exc:
        raise ApiError(409, "conflict", str(exc), details={"job_id": exc.job_id}) from None


def _load_job(request: Request, job_id: int) -> TrainingJob:
    with request.app.state.ctx.store.session() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no training job {job_id}")
        session.expunge(job)
        return job


JobId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


@router.get(
    "/train/{job_id}",
    response_model=TrainingJobOut,
    responses={**_AUTH, 404: {"model": ErrorOut, "description": "no such job"}},
    summary="A training job's state, progress, metrics and error",
)
async def get_training_job(job_id: JobId, request: Request, _who: Principal = Depends(require("admin"))) -> TrainingJobOut:
    """``succeeded`` is reported once the new models (if activated) are in service for classify."""
    job = await asyncio.to_thread(_load_job, request, job_id)
    out = _job_out(job)
    if out.state == "succeeded" and request.app.state.ctx.jobs.is_settling(job_id):
        out.state = "running"
        out.progress = min(out.progress, 0.99)
        out.finished_at = None
    return out


async def _cancel(request: Request, job_id: int) -> TrainingJobOut:
    ctx = request.app.state.ctx
    try:
        await ctx.jobs.cancel(job_id)
    except JobNotFound:
        raise ApiError(404, "not_found", f"no training job {job_id}") from None
    except JobFinished as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except JobConflict:
        raise ApiError(409, "conflict", f"training job {job_id} belongs to another process") from None
    job = await asyncio.to_thread(_load_job, request, job_id)
    return _job_out(job)


_CANCEL_RESPONSES = {
    **_AUTH,
    404: {"model": ErrorOut, "description": "no such job"},
    409: {"model": ErrorOut, "description": "the job already ended"},
}


@router.delete("/train/{job_id}", response_model=TrainingJobOut, responses=_CANCEL_RESPONSES, summary="Cancel a training job")
async def cancel_training_job(job_id: JobId, request: Request, _who: Principal = Depends(require("admin"))) -> TrainingJobOut:
    return await _cancel(request, job_id)


@router.post(
    "/train/{job_id}/cancel", response_model=TrainingJobOut, responses=_CANCEL_RESPONSES, summary="Cancel a training job"
)
async def cancel_training_job_post(
    job_id: JobId, request: Request, _who: Principal = Depends(require("admin"))
) -> TrainingJobOut:
    return await _cancel(request, job_id)


# --------------------------------------------------------------------------- models


def _ops(request: Request) -> ModelOps:
    ctx = request.app.state.ctx
    return ModelOps(ctx.config, ctx.store)


def _serving(request: Request) -> str | None:
    holder = request.app.state.ctx.holder
    return holder.current.version if holder.loaded else None


@router.get("/models", response_model=ModelsOut, responses=_AUTH, summary="Model versions per field")
async def list_models(
    request: Request,
    _who: Principal = Depends(require("admin")),
    field: Annotated[str | None, Query(max_length=100)] = None,
) -> ModelsOut:
    models = await asyncio.to_thread(_ops(request).list, field)
    return ModelsOut(models=models, serving=_serving(request))


#: the HTTP status of each RegistryError code (others: 400)
_REGISTRY_STATUS = {"not_found": 404, "conflict": 409}


async def _change_models(request: Request, change: Callable[[ModelOps], dict[str, str]]) -> ModelChangeOut:
    """Run a model change (a registry error is answered with its code), reload the models, say what serves now."""
    ops = _ops(request)
    try:
        changed = await asyncio.to_thread(change, ops)
    except RegistryError as exc:
        raise ApiError(_REGISTRY_STATUS.get(exc.code, 400), exc.code, str(exc)) from None
    await request.app.state.ctx.reload_models()
    return ModelChangeOut(changed=changed, serving=_serving(request))


@router.post(
    "/models/{version}/activate",
    response_model=ModelChangeOut,
    responses={
        **_AUTH,
        400: {"model": ErrorOut, "description": "ambiguous or unusable version"},
        404: {"model": ErrorOut, "description": "no such version"},
    },
    summary="Activate a model version (hot-swapped into service)",
)
async def activate_model(
    request: Request,
    version: Annotated[str, PathParam(max_length=200)],
    body: Annotated[ActivateRequest | None, Body()] = None,
    _who: Principal = Depends(require("admin")),
) -> ModelChangeOut:
    field = body.field if body else None
    return await _change_models(request, lambda ops: ops.activate(version, field))


@router.post(
    "/models/rollback",
    response_model=ModelChangeOut,
    responses={**_AUTH, 409: {"model": ErrorOut, "description": "nothing to roll back to"}},
    summary="Go back to the previously active version",
)
async def rollback_model(
    request: Request,
    body: Annotated[RollbackRequest | None, Body()] = None,
    _who: Principal = Depends(require("admin")),
) -> ModelChangeOut:
    fields = body.fields if body else None
    return await _change_models(request, lambda ops: ops.rollback(fields))

