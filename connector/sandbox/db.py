"""The sandbox helpdesk's storage: one SQLite file (or ``:memory:``), plain ``sqlite3``.

Everything the sandbox's REST API does goes through :class:`SandboxDB`, and
tests may call it directly to play the human agent (move a ticket, change its
priority, resolve it).  One connection guarded by a lock: the sandbox is small
and each statement takes well under a millisecond, so a pool would only add
overhead.
"""

from __future__ import annotations

import csv
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

#: queues of a fresh sandbox: a source queue, a fallback, and the sample data's queues
DEFAULT_QUEUES: tuple[str, ...] = (
    "Inbox",
    "Triage",
    "Hardware",
    "Software",
    "Access",
    "Network",
    "HR",
    "Billing",
)
DEFAULT_PRIORITIES: tuple[str, ...] = ("low", "normal", "high")
#: ticket states; ``resolved`` and ``closed`` count as resolved
DEFAULT_STATES: tuple[str, ...] = ("new", "open", "pending", "resolved", "closed")
RESOLVED_STATES: frozenset[str] = frozenset({"resolved", "closed"})

DEFAULT_QUEUE = "Inbox"
DEFAULT_PRIORITY = "normal"
DEFAULT_STATE = "new"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS priorities (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS states (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_tickets_queue_state ON tickets (queue, state);
CREATE INDEX IF NOT EXISTS ix_tickets_updated ON tickets (updated_at);
CREATE INDEX IF NOT EXISTS ix_tickets_resolved ON tickets (resolved_at);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id INTEGER NOT NULL REFERENCES tickets (id),
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    internal INTEGER NOT NULL DEFAULT 1,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_notes_ticket ON notes (ticket_id);
"""

_TICKET_COLUMNS = "id, subject, body, queue, priority, state, version, created_at, updated_at, resolved_at"


class SandboxError(Exception):
    """Base of the sandbox's own errors (mapped to HTTP statuses by the app)."""


class TicketNotFound(SandboxError):
    def __init__(self, ticket_id: int) -> None:
        super().__init__(f"ticket {ticket_id} does not exist")
        self.ticket_id = ticket_id


class UnknownValue(SandboxError):
    """A queue, priority or state the sandbox does not have."""

    def __init__(self, field: str, value: str, allowed: Sequence[str]) -> None:
        super().__init__(f"unknown {field} {value!r}; known: {', '.join(allowed)}")
        self.field = field
        self.value = value
        self.allowed = list(allowed)


class VersionConflict(SandboxError):
    def __init__(self, ticket_id: int, expected: int, actual: int) -> None:
        super().__init__(f"ticket {ticket_id} is at version {actual}, not {expected}")
        self.expected = expected
        self.actual = actual


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(when: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: sorts as text, parses everywhere."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time (``Z`` or offset; naive means UTC) or epoch seconds."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TicketRow:
    id: int
    subject: str
    body: str
    queue: str
    priority: str
    state: str
    version: int
    created_at: str
    updated_at: str
    resolved_at: str | None


@dataclass(frozen=True, slots=True)
class NoteRow:
    id: int
    ticket_id: int
    subject: str
    body: str
    internal: bool
    author: str
    created_at: str


@dataclass(frozen=True, slots=True)
class SeedTicket:
    subject: str
    body: str
    queue: str | None = None
    priority: str | None = None
    state: str | None = None


class SandboxDB:
    """The sandbox's tickets, notes, queues, priorities and states."""

    def __init__(self, path: str | Path = ":memory:", *, reset: bool = False) -> None:
        self.path = str(path)
        if reset and self.path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(self.path + suffix).unlink(missing_ok=True)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            if not self.queues():
                self.set_queues(DEFAULT_QUEUES)
            if not self.priorities():
                self.set_priorities(DEFAULT_PRIORITIES)
            if not self.states():
                self._set_names("states", DEFAULT_STATES)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ value lists

    def _names(self, table: str) -> list[str]:
        # not cached: another process (a sandbox served by a subprocess) may share the file
        with self._lock:
            return [r[0] for r in self._conn.execute(f"SELECT name FROM {table} ORDER BY position, name")]

    def _set_names(self, table: str, names: Iterable[str]) -> None:
        unique = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
        with self._tx() as conn:
            conn.execute(f"DELETE FROM {table}")
            conn.executemany(f"INSERT INTO {table} (name, position) VALUES (?, ?)", [(n, i) for i, n in enumerate(unique)])

    def queues(self) -> list[str]:
        return self._names("queues")

    def priorities(self) -> list[str]:
        return self._names("priorities")

    def states(self) -> list[str]:
        return self._names("states")

    def set_queues(self, names: Iterable[str]) -> None:
        self._set_names("queues", names)

    def set_priorities(self, names: Iterable[str]) -> None:
        self._set_names("priorities", names)

    def add_queue(self, name: str) -> bool:
        """Append a queue to the list; False when it already exists (nothing changes)."""
        return self._add_name("queues", name)

    def add_priority(self, name: str) -> bool:
        """Append a priority to the list; False when it already exists (nothing changes)."""
        return self._add_name("priorities", name)

    def _add_name(self, table: str, name: str) -> bool:
        name = name.strip()
        if not name:
            raise ValueError(f"a name in {table} cannot be empty")
        with self._tx() as conn:  # one transaction: another process may add to the same file
            cur = conn.execute(
                f"INSERT OR IGNORE INTO {table} (name, position)"
                f" SELECT ?, COALESCE(MAX(position), -1) + 1 FROM {table}",
                (name,),
            )
            return cur.rowcount == 1

    def _check(self, field: str, value: str, allowed: list[str]) -> None:
        if value not in allowed:
            raise UnknownValue(field, value, allowed)

    # ------------------------------------------------------------------ tickets

    def create_ticket(
        self,
        subject: str,
        body: str,
        *,
        queue: str | None = None,
        priority: str | None = None,
        state: str | None = None,
    ) -> TicketRow:
        return self.create_tickets([SeedTicket(subject, body, queue, priority, state)])[0]

    def create_tickets(self, tickets: Sequence[SeedTicket]) -> list[TicketRow]:
        queues, priorities, states = self.queues(), self.priorities(), self.states()
        rows = []
        now = format_time(utc_now())
        for t in tickets:
            queue = t.queue or DEFAULT_QUEUE
            priority = t.priority or DEFAULT_PRIORITY
            state = t.state or DEFAULT_STATE
            self._check("queue", queue, queues)
            self._check("priority", priority, priorities)
            self._check("state", state, states)
            resolved_at = now if state in RESOLVED_STATES else None
            rows.append((t.subject, t.body, queue, priority, state, now, now, resolved_at))
        with self._tx() as conn:
            first = conn.execute("SELECT COALESCE(MAX(id), 0) FROM tickets").fetchone()[0]
            conn.executemany(
                "INSERT INTO tickets (subject, body, queue, priority, state, created_at, updated_at, resolved_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            found = conn.execute(
                f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id > ? ORDER BY id", (first,)
            ).fetchall()
        return [TicketRow(**dict(r)) for r in found]

    def get_ticket(self, ticket_id: int) -> TicketRow:
        with self._lock:
            row = self._conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise TicketNotFound(ticket_id)
        return TicketRow(**dict(row))

    def update_ticket(
        self,
        ticket_id: int,
        *,
        queue: str | None = None,
        priority: str | None = None,
        state: str | None = None,
        subject: str | None = None,
        body: str | None = None,
        if_version: int | None = None,
    ) -> TicketRow:
        """Change fields of a ticket; every call bumps ``version`` and ``updated_at``."""
        if queue is not None:
            self._check("queue", queue, self.queues())
        if priority is not None:
            self._check("priority", priority, self.priorities())
        if state is not None:
            self._check("state", state, self.states())
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
            if row is None:
                raise TicketNotFound(ticket_id)
            current = TicketRow(**dict(row))
            if if_version is not None and if_version != current.version:
                raise VersionConflict(ticket_id, if_version, current.version)
            now = format_time(_after(current.updated_at))
            resolved_at = current.resolved_at
            new_state = state if state is not None else current.state
            if new_state in RESOLVED_STATES and current.state not in RESOLVED_STATES:
                resolved_at = now
            elif new_state not in RESOLVED_STATES:
                resolved_at = None
            conn.execute(
                "UPDATE tickets SET subject = ?, body = ?, queue = ?, priority = ?, state = ?, version = version + 1,"
                " updated_at = ?, resolved_at = ? WHERE id = ?",
                (
                    subject if subject is not None else current.subject,
                    body if body is not None else current.body,
                    queue if queue is not None else current.queue,
                    priority if priority is not None else current.priority,
                    new_state,
                    now,
                    resolved_at,
                    ticket_id,
                ),
            )
            row = conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        return TicketRow(**dict(row))

    def resolve_ticket(
        self, ticket_id: int, *, queue: str | None = None, priority: str | None = None, state: str = "resolved"
    ) -> TicketRow:
        """What an agent does when done: final queue/priority, state resolved."""
        if state not in RESOLVED_STATES:
            raise UnknownValue("state", state, sorted(RESOLVED_STATES))
        return self.update_ticket(ticket_id, queue=queue, priority=priority, state=state)

    def list_tickets(
        self,
        *,
        queues: Sequence[str] = (),
        states: Sequence[str] = (),
        priorities: Sequence[str] = (),
        updated_since: datetime | None = None,
        resolved_since: datetime | None = None,
        resolved_only: bool = False,
        after_id: int | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[TicketRow], int, bool]:
        """One page of tickets ordered by id, the total number matching the filters, and whether more follow."""
        where: list[str] = []
        args: list[Any] = []
        for column, values in (("queue", queues), ("state", states), ("priority", priorities)):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        if updated_since is not None:
            where.append("updated_at >= ?")
            args.append(format_time(updated_since))
        if resolved_only or resolved_since is not None:
            where.append("resolved_at IS NOT NULL")
        if resolved_since is not None:
            where.append("resolved_at >= ?")
            args.append(format_time(resolved_since))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM tickets{clause}", args).fetchone()[0]
            page_where = where + (["id > ?"] if after_id is not None else [])
            page_args = args + ([after_id] if after_id is not None else [])
            page_clause = f" WHERE {' AND '.join(page_where)}" if page_where else ""
            rows = self._conn.execute(
                f"SELECT {_TICKET_COLUMNS} FROM tickets{page_clause} ORDER BY id LIMIT ? OFFSET ?",
                [*page_args, limit + 1, offset],
            ).fetchall()
        return [TicketRow(**dict(r)) for r in rows[:limit]], total, len(rows) > limit

    def count_tickets(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])

    # ------------------------------------------------------------------ notes

    def add_note(
        self, ticket_id: int, body: str, *, subject: str = "", internal: bool = True, author: str = "api"
    ) -> NoteRow:
        now = format_time(utc_now())
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM tickets WHERE id = ?", (ticket_id,)).fetchone() is None:
                raise TicketNotFound(ticket_id)
            cur = conn.execute(
                "INSERT INTO notes (ticket_id, subject, body, internal, author, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (ticket_id, subject, body, int(internal), author, now),
            )
            note_id = cur.lastrowid
        return NoteRow(note_id or 0, ticket_id, subject, body, internal, author, now)

    def list_notes(self, ticket_id: int) -> list[NoteRow]:
        with self._lock:
            if self._conn.execute("SELECT 1 FROM tickets WHERE id = ?", (ticket_id,)).fetchone() is None:
                raise TicketNotFound(ticket_id)
            rows = self._conn.execute(
                "SELECT id, ticket_id, subject, body, internal, author, created_at FROM notes"
                " WHERE ticket_id = ? ORDER BY id",
                (ticket_id,),
            ).fetchall()
        return [NoteRow(r["id"], r["ticket_id"], r["subject"], r["body"], bool(r["internal"]), r["author"], r["created_at"]) for r in rows]

    # ------------------------------------------------------------------ seeding

    def seed_csv(self, path: str | Path, *, as_new: bool = False, limit: int | None = None) -> int:
        """Create tickets from a CSV file; returns how many.

        Columns: ``subject`` and ``body`` (or ``text`` alone: the body, and the
        first words of its first line the subject), optional ``queue``, ``priority`` and ``state``.
        Queues and priorities named in the file are added to the sandbox.
        With ``as_new`` every ticket lands in the source queue, state new and
        normal priority, whatever the file says (to watch routing happen);
        the queues and priorities are added all the same, so that an agent
        can move a ticket where the file says it belongs.
        """
        tickets = read_seed_csv(path, limit=limit)
        for q in dict.fromkeys(t.queue for t in tickets if t.queue):
            self.add_queue(q)
        for p in dict.fromkeys(t.priority for t in tickets if t.priority):
            self.add_priority(p)
        if as_new:
            tickets = [SeedTicket(t.subject, t.body) for t in tickets]
        self.create_tickets(tickets)
        return len(tickets)


def _after(previous: str) -> datetime:
    """Now, but strictly later than ``previous`` (so ``updated_at`` changes on every update)."""
    now = utc_now()
    try:
        before = parse_time(previous)
    except ValueError:
        return now
    if now <= before:
        now = before + timedelta(microseconds=1)
    return now


def sample_tickets_path() -> Path:
    """The project's sample tickets (``connector/sample_data/tickets.csv``): subject, body, queue, priority."""
    return Path(__file__).resolve().parent.parent / "sample_data" / "tickets.csv"


def _subject_from_text(text: str, words: int = 8) -> str:
    """The first words of the text's first line: a prefix of the body, so that a ticket's
    text (``connector.text.ticket_text``: a body starting with the subject is taken alone)
    is the original text once, not its first words and then the text again."""
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    return " ".join(first_line.split()[:words])


def read_seed_csv(path: str | Path, *, limit: int | None = None) -> list[SeedTicket]:
    """Tickets from a seed CSV; ValueError naming the problem when the columns do not fit."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        if "body" not in columns and "text" not in columns:
            raise ValueError(
                f"{path}: needs columns 'subject' and 'body' (or 'text'); found: {', '.join(columns) or 'none'}"
            )
        out: list[SeedTicket] = []
        for row in reader:
            def col(name: str) -> str | None:
                key = columns.get(name)
                value = row.get(key) if key else None
                return value.strip() if isinstance(value, str) and value.strip() else None

            body = col("body") or col("text") or ""
            subject = col("subject") or _subject_from_text(body)
            if not subject and not body:
                continue
            out.append(SeedTicket(subject, body, col("queue"), col("priority"), col("state")))
            if limit is not None and len(out) >= limit:
                break
    return out
