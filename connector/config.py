"""The installation's configuration: one YAML file, overridable from the environment.

``load_config(path)`` reads the YAML, lets environment variables override it
(prefix ``HELPDESK_CONNECTOR_``, nesting with ``__``, e.g.
``HELPDESK_CONNECTOR_SYSTEMS__RT__CONNECTION__TOKEN``), validates everything
(unknown keys are errors) including each system's adapter ``connection``
settings, and raises :class:`ConfigError` listing every problem with its key
path and the file.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapters.base import AdapterSettings
from adapters.http import renamed_keys_in
from adapters.registry import ADAPTER_TYPES, adapter_class
from connector.api.settings import ApiSettings
from connector.learning.settings import LearningSettings
from connector.model.settings import ModelSettings, TrainingSettings

log = logging.getLogger(__name__)

ENV_PREFIX = "HELPDESK_CONNECTOR_"
CONFIG_ENV = "HELPDESK_CONNECTOR_CONFIG"

Mode = Literal["apply", "suggest", "dry-run"]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(Exception):
    """The configuration file cannot be used; ``problems`` lists each with its key path."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"invalid configuration in {source} ({len(problems)} problem(s)):\n{lines}")


def _key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _problems(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[ConfigProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        out.append(ConfigProblem(_key_path(loc), message))
    return out


# --------------------------------------------------------------------------- routing


class FieldRouting(BaseModel):
    """How one predicted field (queue or priority) is written to a system."""

    model_config = ConfigDict(extra="forbid")

    #: model label (exact, wildcard like ``Hardware/*``, or ``*``) -> the system's value;
    #: ``{label}`` in a value is replaced by the predicted label
    map: dict[str, str] = Field(default_factory=dict)
    #: write only when the model's confidence is at least this
    threshold: float = Field(0.7, ge=0.0, le=1.0)
    #: below the threshold: send to ``fallback`` or leave the field alone
    low_confidence: Literal["fallback", "leave"] = "leave"
    fallback: str | None = None

    @model_validator(mode="after")
    def _fallback_given(self) -> FieldRouting:
        if self.low_confidence == "fallback" and not self.fallback:
            raise ValueError("low_confidence is 'fallback' but no 'fallback' value is set")
        return self

    def target_for(self, label: str) -> str | None:
        """The system value for a model label, or None when the mapping has no entry."""
        if label in self.map:
            return self.map[label].replace("{label}", label)
        best: tuple[int, str] | None = None
        for pattern, value in self.map.items():
            if pattern == "*" or not any(c in pattern for c in "*?["):
                continue
            if fnmatch.fnmatchcase(label, pattern):
                specificity = len(pattern.replace("*", ""))
                if best is None or specificity > best[0]:
                    best = (specificity, value)
        if best is not None:
            return best[1].replace("{label}", label)
        if "*" in self.map:
            return self.map["*"].replace("{label}", label)
        return None

    def system_values(self) -> set[str]:
        """Every concrete value this routing may write (for online checks)."""
        values = {v for v in self.map.values() if "{label}" not in v}
        if self.fallback:
            values.add(self.fallback)
        return values


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: FieldRouting | None = None
    priority: FieldRouting | None = None

    def fields(self) -> dict[str, FieldRouting]:
        return {name: r for name, r in (("queue", self.queue), ("priority", self.priority)) if r is not None}


DEFAULT_NOTE_TEMPLATE = (
    "helpdesk-connector ({mode}), model {model_version}:\n"
    "{lines}"
)


class NoteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    subject: str = "Automatic routing"
    #: placeholders: {mode} {model_version} {lines} {queue} {queue_confidence} {priority} {priority_confidence}
    template: str = DEFAULT_NOTE_TEMPLATE


class SourceSettings(BaseModel):
    """Which tickets count as new."""

    model_config = ConfigDict(extra="forbid")

    queues: list[str] = Field(default_factory=list)
    states: list[str] = Field(default_factory=lambda: ["new"])


class SystemConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    enabled: bool = True
    #: adapter-specific settings, validated by the adapter's own model
    connection: Any = Field(default_factory=dict)
    source: SourceSettings = Field(default_factory=SourceSettings)
    poll_interval: float = Field(60.0, gt=0)
    page_size: int = Field(50, ge=1, le=1000)
    max_tickets_per_poll: int = Field(500, ge=1)
    max_concurrent_writes: int = Field(4, ge=1, le=64)
    mode: Mode = "apply"
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    note: NoteSettings = Field(default_factory=NoteSettings)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in ADAPTER_TYPES:
            raise ValueError(f"unknown adapter type {value!r}; one of: {', '.join(sorted(ADAPTER_TYPES))}")
        return value


# --------------------------------------------------------------------------- top level


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: SQLAlchemy URL; default an SQLite file in state_dir
    url: str | None = None


class LoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class DaemonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the name of this daemon in its claims and its lease; default: unique per running daemon
    #: (host name, process id, random part).  A second daemon under a live explicit id is refused.
    instance_id: str | None = None
    #: on SIGTERM, wait this long for the batch in flight before abandoning it
    shutdown_timeout: float = Field(30.0, ge=0)
    #: seconds a daemon's lease lasts after its last heartbeat (a killed daemon's claims wait this long)
    lease_ttl: float = Field(60.0, gt=0)
    #: seconds between heartbeats renewing the lease; less than lease_ttl
    heartbeat_interval: float = Field(15.0, gt=0)
    #: claims of an owner without any lease (written by a version before leases) older than this are reconciled
    claim_timeout: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _heartbeat_within_ttl(self) -> DaemonSettings:
        if self.heartbeat_interval >= self.lease_ttl:
            raise ValueError(f"heartbeat_interval ({self.heartbeat_interval:g} s) must be less than "
                             f"lease_ttl ({self.lease_ttl:g} s), or the lease lapses between heartbeats")
        return self


class AppConfig(BaseSettings):
    """The whole configuration of one installation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    state_dir: Path = Path("./var")
    store: StoreSettings = Field(default_factory=StoreSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    systems: dict[str, SystemConfig] = Field(default_factory=dict)
    api: ApiSettings = Field(default_factory=ApiSettings)
    learning: LearningSettings = Field(default_factory=LearningSettings)

    #: the file this was loaded from (not a key of the file)
    source_path: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment variables override the YAML file (passed as init kwargs)
        return (env_settings, init_settings)

    # ---- derived values

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{(self.state_dir / 'connector.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.model.dir or (self.state_dir / "models")

    def adapter_settings(self, system: str) -> AdapterSettings:
        conn = self.systems[system].connection
        assert isinstance(conn, AdapterSettings), "load_config() validates connections"
        return conn


def _validate_connections(config: AppConfig) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for name, system in config.systems.items():
        settings_model = adapter_class(system.type).settings_model
        raw = system.connection
        if isinstance(raw, AdapterSettings):
            continue
        if not isinstance(raw, dict):
            problems.append(ConfigProblem(f"systems.{name}.connection", "must be a mapping"))
            continue
        try:
            system.connection = settings_model.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_problems(exc, ("systems", name, "connection")))
            continue
        _warn_renamed_keys(name, system.type, renamed_keys_in(settings_model, raw))
    return problems


def _warn_renamed_keys(system: str, type_name: str, renamed: list[tuple[str, str]]) -> None:
    for old, new in renamed:
        log.warning(
            "systems.%s.connection.%s is deprecated: use %s (the common name of every adapter; system %s, type %s)",
            system, old, new, system, type_name,
        )


def _check_routing(config: AppConfig) -> list[ConfigProblem]:
    problems = []
    for name, system in config.systems.items():
        for field in system.routing.fields():
            if field not in config.model.fields:
                problems.append(
                    ConfigProblem(f"systems.{name}.routing.{field}", f"model.fields does not predict {field!r}")
                )
    return problems


def parse_config(data: Any, source: str = "<config>") -> AppConfig:
    """Validate already-parsed YAML data (plus the environment) into an AppConfig."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigProblem("", "the top level must be a mapping of keys")])
    try:
        config = AppConfig(**data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    problems = _validate_connections(config) + _check_routing(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: str | os.PathLike[str]) -> AppConfig:
    """Read, override from the environment, and validate the YAML file at ``path``."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [ConfigProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot read: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigProblem("", f"invalid YAML at {where}{problem}")]) from None
    config = parse_config(data, source)
    if not config.state_dir.is_absolute():
        config.state_dir = (path.parent / config.state_dir).resolve()
    config.source_path = path
    return config
