"""The database schema (SQLAlchemy 2 declarative).  Migrations live in ``connector/migrations``.

Owners: decisions + poll_state + instance_leases (routing engine), model_versions + model_activations
(model lifecycle), training_examples + corrections (learning loop), datasets +
training_jobs (REST API and training).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Decision(Base):
    """One ticket's routing decision: claimed first, then finished with an outcome."""

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint("system", "ticket_id", name="uq_decisions_system_ticket"),
        Index("ix_decisions_status", "status"),
        Index("ix_decisions_system_decided", "system", "decided_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(100))
    ticket_id: Mapped[str] = mapped_column(String(100))
    #: claimed | applied | suggested | dry_run | skipped | changed | failed
    status: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(20))
    claimed_by: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    model_version: Mapped[str | None] = mapped_column(String(200))
    #: {"queue": {"label":..,"confidence":..,"top_k":[..]}, "priority": {...}}
    predictions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the ticket as fetched: {"queue":..,"priority":..,"state":..,"updated_at":..}
    original: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: what the daemon meant to write: {"queue":..,"priority":..,"note":bool}
    planned: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: what was written: {"queue":..,"priority":..,"note": true|false|"unverified"}; {"note": "pending"} while
    #: a claim's note is being sent (it may be on the ticket; the note carries "[helpdesk-connector decision <id>]")
    applied: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class PollState(Base):
    """Per system: cursors and health."""

    __tablename__ = "poll_state"

    system: Mapped[str] = mapped_column(String(100), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    last_poll_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    export_cursor: Mapped[str | None] = mapped_column(Text)
    export_since: Mapped[datetime | None]
    last_export_at: Mapped[datetime | None]


class InstanceLease(Base):
    """A running daemon's identity, held while it runs: renewed by its heartbeat, expired when it stops or dies."""

    __tablename__ = "instance_leases"

    instance_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: boot id + PID namespace of the holder: where its pid can be checked (see connector.store.leases)
    pid_scope: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    #: the lease is live while this lies in the future; set to the release time on a clean stop
    expires_at: Mapped[datetime]


class ModelVersion(Base):
    """A trained model for one label field."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("field", "version", name="uq_model_versions_field_version"),
        Index("ix_model_versions_field_active", "field", "active"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    field: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(40), default="transformer")
    base_model: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str | None] = mapped_column(String(128))
    training: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None]


class ModelActivation(Base):
    """History of activations, newest last; rollback walks it back."""

    __tablename__ = "model_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    field: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(200))
    previous_version: Mapped[str | None] = mapped_column(String(200))
    activated_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)


class TrainingExample(Base):
    """A labelled ticket for (re)training: one per system + ticket; a later export replaces it."""

    __tablename__ = "training_examples"
    __table_args__ = (
        UniqueConstraint("system", "ticket_id", name="uq_training_examples_system_ticket"),
        Index("ix_training_examples_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(100))
    ticket_id: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(20), default="export")
    #: held apart as the fixed evaluation set; never trained on
    is_eval: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Correction(Base):
    """A person changed what the daemon set."""

    __tablename__ = "corrections"
    __table_args__ = (UniqueConstraint("system", "ticket_id", "field", name="uq_corrections_system_ticket_field"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(100))
    ticket_id: Mapped[str] = mapped_column(String(100))
    field: Mapped[str] = mapped_column(String(100))
    predicted: Mapped[str | None] = mapped_column(Text)
    final: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime]


class Dataset(Base):
    """An uploaded or exported training dataset stored as a file."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    rows: Mapped[int] = mapped_column(Integer)
    label_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fingerprint: Mapped[str | None] = mapped_column(String(128))


class TrainingJob(Base):
    """A training run (by the API, the CLI or the retraining schedule)."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: queued | running | succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(20))
    dataset_id: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
