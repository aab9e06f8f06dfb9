"""Logging: text or JSON lines on stderr, secrets redacted, noisy libraries quieted.

:func:`configure_logging` is called once by every long-running command.  The
:class:`SecretFilter` sits on the handler, so every record from every logger
(including tracebacks) passes through it: configured tokens and passwords,
``Authorization`` headers, bearer tokens and ``password=``/``token=`` pairs
are replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, SecretStr

REDACTED = "***"

#: patterns redacted whatever the configuration says
_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)(?:(?:bearer|basic|token)\s+)?([^\s,;'\"}]+)"),
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"(?i)((?:password|passwd|secret|token|api[_-]?key|apikey)[\"']?\s*[:=]\s*[\"']?)([^\s,;&'\"}]+)"),
]

#: connection setting names that hold secrets
_SECRET_NAMES = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|credential)")

_QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    # "skipped: maximum number of running instances reached" is expected when a poll outlasts its interval
    "apscheduler": logging.ERROR,
    "transformers": logging.ERROR,
    "urllib3": logging.WARNING,
    "alembic": logging.WARNING,
    "filelock": logging.WARNING,
    "multipart": logging.WARNING,
}


class SecretFilter(logging.Filter):
    """Replaces known secret values and secret-looking patterns in log records."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if s and len(s) >= 4}
        self.secrets = sorted(set(self.secrets) | values, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts
            message = f"{record.msg} {record.args}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def collect_secrets(config: Any) -> list[str]:
    """Every secret value in an AppConfig: connection passwords/tokens, API tokens, store password."""
    found: list[str] = []

    def walk(value: Any, name: str = "") -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for key in type(value).model_fields:
                walk(getattr(value, key, None), key)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, str(key))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, name)
        elif isinstance(value, str) and name and _SECRET_NAMES.search(name):
            found.append(value)

    walk(config)
    store = getattr(config, "store", None)
    url = getattr(store, "url", None)
    if url:
        try:
            from sqlalchemy.engine import make_url

            password = make_url(url).password
            if password:
                found.append(str(password))
        except Exception:  # an unparsable URL is reported elsewhere
            pass
    return [s for s in found if s]


def quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # transformers absent or changed: nothing to quiet
        pass


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    *,
    stream: Any = None,
) -> SecretFilter:
    """Install one stderr handler on the root logger; returns its filter (add secrets later)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    secret_filter = SecretFilter(secrets)
    handler.addFilter(secret_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_helpdesk_connector", False):
            root.removeHandler(old)
    handler._helpdesk_connector = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries()
    logging.captureWarnings(True)
    return secret_filter


def configure_from_config(config: Any, *, stream: Any = None) -> SecretFilter:
    return configure_logging(
        config.logging.level, config.logging.format, collect_secrets(config), stream=stream
    )
