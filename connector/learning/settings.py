"""Configuration of the learning loop (the ``learning`` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PrivacySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: replace e-mail addresses, phone numbers, IBAN/card-like numbers and token URLs before storing text
    anonymize: bool = True
    #: delete stored training examples older than this many days (0: keep forever)
    retention_days: int = Field(365, ge=0)


class LearningSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: cron expression (5 fields) for the export of resolved tickets
    export_cron: str = "15 2 * * *"
    #: retrain after an export once this many new examples (or corrections) arrived
    retrain_min_new_examples: int = Field(200, ge=1)
    #: optional base dataset trained on together with the exported examples
    base_dataset: Path | None = None
    #: text column of the base dataset (default: ``text``, or ``subject`` + ``body``)
    base_dataset_text_column: str | None = None
    #: label field -> column of the base dataset (default: the ``queue``/``priority`` columns present)
    base_dataset_label_columns: dict[str, str] = Field(default_factory=dict)
    #: share of exported tickets held apart (never trained on) as the fixed evaluation set
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    #: fewer held-apart examples than this: no comparison is possible, so nothing is promoted (unless forced)
    min_eval_examples: int = Field(20, ge=1)
    #: how many times a ticket whose routing a person corrected counts in training
    correction_weight: int = Field(2, ge=1, le=20)
    #: re-ask for tickets resolved this long before the previous export's start (clock skew)
    export_overlap_minutes: float = Field(10.0, ge=0)
    #: niceness added to the training process (routing keeps priority)
    training_nice: int = Field(10, ge=0, le=19)
    #: a training process running longer than this is killed and recorded as failed
    training_timeout_minutes: float = Field(360.0, gt=0)
    #: ``status`` compares the labels of tickets resolved in this many days with the training data
    drift_window_days: int = Field(30, ge=1)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    @field_validator("export_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid 5-field cron expression: {exc}") from None
        return value
