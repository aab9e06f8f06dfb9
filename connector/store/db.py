"""Database connection: engine, sessions, and migrations applied at start.

SQLite (a file, the default) and PostgreSQL are supported.  SQLite runs in WAL
mode with a busy timeout so the daemon, the API and the CLI can share one file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_migrate_lock = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; treat them as UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_Record = TypeVar("_Record")


def detach(cls: type[_Record], row: object, **converted: Any) -> _Record:
    """The dataclass ``cls`` filled from an ORM row, detached from its session.

    Each field takes the row's attribute of the same name (a datetime as UTC:
    :func:`as_utc`); ``converted`` gives the fields whose value needs more (JSON
    columns, enums, defaults for NULL).
    """
    names = [f.name for f in fields(cls) if f.name not in converted]  # type: ignore[arg-type]
    return cls(**{name: _utc_if_datetime(getattr(row, name)) for name in names}, **converted)


def _utc_if_datetime(value: object) -> object:
    return as_utc(value) if isinstance(value, datetime) else value


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs."""
    return make_url(url).render_as_string(hide_password=True)


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2") and "+" not in url.split("://")[0]:
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, pool_pre_ping=True)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe for several daemons)."""
    with _migrate_lock, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # serialise concurrent start-ups of several daemons on one database
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727465)")
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """The database of one installation: an engine plus a session factory."""

    def __init__(self, url: str, *, apply_migrations: bool = True) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        if apply_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)})"
