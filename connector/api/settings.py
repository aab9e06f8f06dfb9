"""Configuration of the REST API (the ``api`` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connector.model.settings import WorkerCount


class ApiToken(BaseModel):
    """A client's bearer token; ``token_file`` (a path, content stripped) may replace ``token``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    token: SecretStr
    scopes: list[Literal["classify", "admin"]] = Field(default_factory=lambda: ["classify"], min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _read_token_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("token_file") is None:
            return data
        data = dict(data)
        path = Path(str(data.pop("token_file"))).expanduser()
        try:
            data["token"] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"token_file: cannot read {path}: {exc.strerror or exc}") from exc
        return data

    @field_validator("token")
    @classmethod
    def _strong_enough(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if len(secret) < 16:
            raise ValueError("a token must have at least 16 characters (e.g. `openssl rand -hex 32`)")
        if not secret.strip():
            raise ValueError("a token must not be blank (e.g. `openssl rand -hex 32`)")
        if secret != secret.strip():
            raise ValueError("a token must not begin or end with whitespace (HTTP drops it from the header)")
        if len(set(secret)) == 1:
            raise ValueError("a token must not be one repeated character (e.g. `openssl rand -hex 32`)")
        return value


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
    #: ``POST /train`` waits this long for its job (and its models in service) unless the client asks for
    #: asynchronous behaviour (``Prefer: respond-async`` or ``?wait=false``); then answers 202 with the job
    train_wait_s: float = Field(3600.0, ge=0)
    #: concurrent classify requests share forward passes (off: one forward pass per request)
    micro_batching: bool = True
    #: wait up to this long for more classify requests to share one forward pass
    micro_batch_wait_ms: float = Field(5.0, ge=0, le=1000)
    micro_batch_max: int = Field(64, ge=1)
    #: forward passes of classify requests that may run at once (worker threads); ``auto``: one per CPU
    #: core on a CPU (each pass on one core, see ``model.cpu_threads``), one on a GPU
    micro_batch_workers: WorkerCount = "auto"
