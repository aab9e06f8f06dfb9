"""Configuration of the learning loop (the ``learning`` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


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
    #: share of exported tickets held apart (never trained on) as the fixed evaluation set
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
