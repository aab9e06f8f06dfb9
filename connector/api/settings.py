"""Configuration of the REST API (the ``api`` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ApiToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    token: SecretStr
    scopes: list[Literal["classify", "admin"]] = Field(default_factory=lambda: ["classify"])


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: also serve the API inside ``run`` (one process: daemon + API)
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list)
    max_body_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    max_ticket_chars: int = Field(100_000, ge=100)
    max_batch: int = Field(256, ge=1)
    #: wait up to this long for more classify requests to share one forward pass
    micro_batch_wait_ms: float = Field(5.0, ge=0, le=1000)
    micro_batch_max: int = Field(64, ge=1)
    #: forward passes of classify requests that may run at once (worker threads)
    micro_batch_workers: int = Field(1, ge=1, le=32)
