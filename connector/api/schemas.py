"""Request and answer bodies of the REST API (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from connector.store.db import as_utc


#: the largest row id (32-bit integer columns); larger ids are client errors, not database errors
MAX_ID = 2**31 - 1


#: a point in time answered with its time zone (RFC 3339 ``date-time``): the store keeps UTC, and SQLite
#: hands it back without a zone
UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- classify


class ClassifyRequest(BaseModel):
    """The classic call: ``{"ticket_data": "..."}``; ``subject`` and ``body`` may be given instead."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"ticket_data": "Printer on floor 3 is jammed"}]})

    ticket_data: str | None = Field(None, description="The ticket's text (subject and body together)")
    subject: str | None = Field(None, description="The subject, when ticket_data is not given")
    body: str | None = Field(None, description="The body (plain text or HTML), when ticket_data is not given")


class LabelScoreOut(BaseModel):
    label: str
    confidence: float


class FieldPredictionOut(BaseModel):
    label: str
    confidence: float
    top_k: list[LabelScoreOut]


class ClassifyResponse(BaseModel):
    """``predicted_label`` / ``confidence`` are the queue (the classic answer); the rest is beside them."""

    predicted_label: str
    confidence: float
    predicted_priority: str | None = None
    priority_confidence: float | None = None
    fields: dict[str, FieldPredictionOut]
    model_version: str


class BatchTicket(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ticket_data: str | None = None
    subject: str | None = None
    body: str | None = None


class BatchClassifyRequest(_Strict):
    tickets: list[str | BatchTicket] = Field(..., description="Ticket texts, or objects like the single classify body")


class BatchClassifyResponse(BaseModel):
    results: list[ClassifyResponse]
    model_version: str


# --------------------------------------------------------------------------- datasets


class DatasetOut(BaseModel):
    id: int
    name: str
    rows: int
    label_counts: dict[str, dict[str, int]]
    fingerprint: str | None = None
    created_at: UtcDateTime


# --------------------------------------------------------------------------- training


class TrainRequest(_Strict):
    """All optional: the latest dataset, the configured fields and the configured base model."""

    dataset_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="Which uploaded dataset (default: the latest)"
    )
    fields: list[str] | None = Field(None, min_length=1, max_length=16, description="Label fields to train")
    base_model: str | None = Field(
        None, max_length=1000, description="A base model directory on the server (default: model.base_model)"
    )
    epochs: int | None = Field(None, ge=1, le=100)
    activate: Literal["if_better", "always", "never"] = Field(
        "if_better", description="Activate the new models: if no worse than the active ones, always, or never"
    )


class TrainAccepted(BaseModel):
    job_id: int
    state: str
    status_url: str
    message: str | None = Field(None, description="Why the answer came before the job ended (the wait limit passed)")


class TrainingJobOut(BaseModel):
    job_id: int
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    trigger: str
    dataset_id: int | None
    params: dict[str, Any]
    progress: float
    metrics: dict[str, Any]
    error: str | None
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None


# --------------------------------------------------------------------------- models


class ModelVersionOut(BaseModel):
    field: str
    version: str
    active: bool
    created_at: UtcDateTime | None
    activated_at: UtcDateTime | None
    base_model: str | None
    metrics: dict[str, Any]


class ModelsOut(BaseModel):
    models: list[ModelVersionOut]
    serving: str | None = Field(None, description="The model version the API classifies with now")


class ActivateRequest(_Strict):
    field: str | None = Field(None, max_length=100, description="Needed only when several fields have this version")


class RollbackRequest(_Strict):
    fields: list[str] | None = Field(None, min_length=1, max_length=16, description="Default: every field")


class ModelChangeOut(BaseModel):
    changed: dict[str, str] = Field(description="Field -> the version now active")
    serving: str | None


# --------------------------------------------------------------------------- health


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail
