"""Export of resolved tickets as training examples.

Each system is asked for the tickets resolved since its export cursor
(``PollState.export_since``).  Every page is written in ONE transaction with
the adapter's page cursor (``PollState.export_cursor``), so an export killed
at any moment resumes after the last stored page, and because examples are
upserted by (system, ticket id), a page seen twice never duplicates anything.

A ticket becomes an example: text from :func:`connector.text.ticket_text`
(anonymised before it is stored, when configured), final labels mapped back
from the system's values to model labels, a deterministic evaluation-set flag
(a hash of system + ticket id, so the held-apart set never moves), and the
corrections found against the daemon's decision for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.registry import build_adapter
from adapters.base import Adapter, Ticket
from connector.config import AppConfig, SystemConfig
from connector.learning.anonymize import anonymize
from connector.learning.corrections import CorrectionFound, detect_corrections
from connector.learning.labels import label_for_value
from connector.store.db import Store, as_utc, utcnow
from connector.store.tables import PollState, TrainingExample
from connector.text import ticket_text

log = logging.getLogger(__name__)


class ExportError(Exception):
    """An export cannot run (unknown system, no labels configured)."""


@dataclass(frozen=True, slots=True)
class ExampleRecord:
    """One resolved ticket as training data (what the store and the export files hold)."""

    system: str
    ticket_id: str
    text: str
    labels: dict[str, str]
    resolved_at: datetime | None
    is_eval: bool

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"system": self.system, "ticket_id": self.ticket_id, "text": self.text}
        row.update(self.labels)
        row["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        row["is_eval"] = self.is_eval
        return row


@dataclass
class ExportStats:
    system: str
    pages: int = 0
    tickets: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    unlabelled: int = 0
    corrections: int = 0
    resumed: bool = False
    corrections_found: list[CorrectionFound] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counts (not the corrections found)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "corrections_found"}


# --------------------------------------------------------------------------- pure helpers


def is_eval_ticket(system: str, ticket_id: str, fraction: float) -> bool:
    """Whether a ticket belongs to the fixed evaluation set: a stable hash, never a random draw."""
    digest = hashlib.sha256(f"{system}\x00{ticket_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def final_values(ticket: Ticket, fields: Iterable[str]) -> dict[str, str | None]:
    """The ticket's final system values per label field (``queue``, ``priority``, or ``extra`` keys)."""
    out: dict[str, str | None] = {}
    for name in fields:
        value = getattr(ticket, name, None) if name in ("queue", "priority") else ticket.extra.get(name)
        out[name] = None if value is None or value == "" else str(value)
    return out


def resolved_time(ticket: Ticket) -> datetime | None:
    raw = ticket.extra.get("resolved_at") if ticket.extra else None
    if isinstance(raw, datetime):
        return as_utc(raw)
    if isinstance(raw, str):
        try:
            return as_utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))
        except ValueError:
            pass
    return as_utc(ticket.updated_at)


def to_example(
    ticket: Ticket,
    system: str,
    system_config: SystemConfig,
    fields: Iterable[str],
    *,
    eval_fraction: float,
    anonymizer: Callable[[str], str] | None,
) -> ExampleRecord:
    text = ticket_text(ticket.subject, ticket.body, is_html=ticket.body_is_html or None)
    if anonymizer is not None:
        text = anonymizer(text)
    routing = system_config.routing.fields()
    labels: dict[str, str] = {}
    for name, value in final_values(ticket, fields).items():
        label = label_for_value(routing.get(name), value)
        if label is not None:
            labels[name] = label
    return ExampleRecord(
        system=system,
        ticket_id=str(ticket.id),
        text=text,
        labels=labels,
        resolved_at=resolved_time(ticket),
        is_eval=is_eval_ticket(system, str(ticket.id), eval_fraction),
    )


def make_adapter(config: AppConfig, system: str) -> Adapter:
    if system not in config.systems:
        raise ExportError(f"unknown system {system!r}; configured: {', '.join(sorted(config.systems)) or 'none'}")
    return build_adapter(system, config.systems[system])


async def _complete(adapter: Adapter, ticket: Ticket) -> Ticket:
    """The ticket with its body (listings may leave it out)."""
    if ticket.body is None:
        return await adapter.get_ticket(ticket.id)
    return ticket


async def iter_examples(
    config: AppConfig,
    system: str,
    adapter: Adapter,
    *,
    since: datetime | None,
    cursor: str | None = None,
) -> AsyncIterator[tuple[list[tuple[Ticket, ExampleRecord]], str | None]]:
    """Pages of (ticket, example) for the tickets resolved since ``since``, with the page cursor."""
    cfg = config.systems[system]
    anonymizer = anonymize if config.learning.privacy.anonymize else None
    async for page in adapter.list_resolved_tickets(since, cursor, cfg.page_size):
        items = []
        for listed in page.tickets:
            ticket = await _complete(adapter, listed)
            items.append(
                (
                    ticket,
                    to_example(
                        ticket,
                        system,
                        cfg,
                        config.model.fields,
                        eval_fraction=config.learning.eval_fraction,
                        anonymizer=anonymizer,
                    ),
                )
            )
        yield items, page.cursor


# --------------------------------------------------------------------------- the store side


def upsert_example(session: Session, record: ExampleRecord, *, source: str, now: datetime) -> str:
    """Insert or replace the example of (system, ticket): ``"new"``, ``"updated"`` or ``"unchanged"``."""
    row = session.scalar(
        select(TrainingExample).where(
            TrainingExample.system == record.system, TrainingExample.ticket_id == record.ticket_id
        )
    )
    if row is None:
        session.add(
            TrainingExample(
                system=record.system,
                ticket_id=record.ticket_id,
                text=record.text,
                labels=dict(record.labels),
                source=source,
                is_eval=record.is_eval,
                resolved_at=record.resolved_at,
                created_at=now,
                updated_at=now,
            )
        )
        return "new"
    changed = (row.text, row.labels, row.source, row.is_eval) != (record.text, record.labels, source, record.is_eval)
    row.text = record.text
    row.labels = dict(record.labels)
    row.source = source
    row.is_eval = record.is_eval
    row.resolved_at = record.resolved_at
    if changed:
        row.updated_at = now
    return "updated" if changed else "unchanged"


@dataclass(frozen=True, slots=True)
class _RunState:
    since: datetime | None
    cursor: str | None
    started: datetime

    def dump(self) -> str:
        return json.dumps(
            {
                "since": self.since.isoformat() if self.since else None,
                "cursor": self.cursor,
                "started": self.started.isoformat(),
            }
        )

    @classmethod
    def load(cls, raw: str) -> _RunState | None:
        try:
            data = json.loads(raw)
            since = datetime.fromisoformat(data["since"]) if data.get("since") else None
            return cls(as_utc(since), data.get("cursor"), as_utc(datetime.fromisoformat(data["started"])))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError):
            return None


def _poll_state(session: Session, system: str) -> PollState:
    state = session.get(PollState, system)
    if state is None:
        state = PollState(system=system, consecutive_failures=0)
        session.add(state)
        session.flush()
    return state


def _begin(store: Store, system: str, since_override: datetime | None, now: datetime) -> tuple[_RunState, bool]:
    try:
        return _begin_once(store, system, since_override, now)
    except IntegrityError:
        # another process created the system's poll_state row at the same moment
        return _begin_once(store, system, since_override, now)


def _begin_once(store: Store, system: str, since_override: datetime | None, now: datetime) -> tuple[_RunState, bool]:
    with store.session() as session:
        state = _poll_state(session, system)
        if state.export_cursor and since_override is None:
            resumed = _RunState.load(state.export_cursor)
            if resumed is not None:
                return resumed, True
            log.warning("export of %s: unreadable saved cursor, starting over from the last completed export", system)
        since = since_override if since_override is not None else as_utc(state.export_since)
        run = _RunState(since=since, cursor=None, started=now)
        state.export_cursor = run.dump()
        return run, False


class Exporter:
    """Runs the export of one or all systems into the store."""

    def __init__(
        self,
        config: AppConfig,
        store: Store,
        *,
        adapter_factory: Callable[[AppConfig, str], Adapter] = make_adapter,
        on_correction: Callable[[CorrectionFound], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self.adapter_factory = adapter_factory
        self.on_correction = on_correction
        self.clock = clock

    async def export_all(self) -> list[ExportStats]:
        results = []
        for name, system in self.config.systems.items():
            if not system.enabled:
                continue
            try:
                results.append(await self.export_system(name))
            except Exception:  # one failing system must not stop the others
                log.exception("export of %s failed; it resumes from its saved cursor next time", name)
        return results

    async def export_system(self, system: str, *, since: datetime | None = None) -> ExportStats:
        """Export one system; ``since`` (by hand) starts a fresh run from that time."""
        adapter = self.adapter_factory(self.config, system)
        try:
            return await self._export(system, adapter, since)
        finally:
            await adapter.aclose()

    async def _export(self, system: str, adapter: Adapter, since_override: datetime | None) -> ExportStats:
        run, resumed = await asyncio.to_thread(_begin, self.store, system, since_override, self.clock())
        stats = ExportStats(system=system, resumed=resumed)
        if resumed:
            log.info("export of %s resumes an interrupted run (started %s)", system, run.started.isoformat())
        cursor = run.cursor
        async for items, page_cursor in iter_examples(self.config, system, adapter, since=run.since, cursor=run.cursor):
            if page_cursor is not None:
                cursor = page_cursor
            page_run = _RunState(run.since, cursor, run.started)
            # the database work runs in a thread: the daemon's polls share this event loop
            await asyncio.to_thread(self._store_page, system, items, page_run, stats)
            stats.pages += 1
        await asyncio.to_thread(self._finish, system, run)
        log.info(
            "export of %s: %d tickets, %d new examples, %d updated, %d corrections",
            system,
            stats.tickets,
            stats.new,
            stats.updated,
            stats.corrections,
        )
        return stats

    def _store_page(
        self, system: str, items: list[tuple[Ticket, ExampleRecord]], run: _RunState, stats: ExportStats
    ) -> None:
        fields = self.config.model.fields
        for attempt in (1, 2):
            found: list[CorrectionFound] = []
            counts = {"new": 0, "updated": 0, "unchanged": 0, "unlabelled": 0}
            try:
                with self.store.session() as session:
                    now = self.clock()
                    for ticket, record in items:
                        corrections = detect_corrections(
                            session, system, record.ticket_id, final_values(ticket, fields), now=now
                        )
                        found.extend(corrections)
                        if not record.labels:
                            counts["unlabelled"] += 1
                            continue
                        source = "correction" if corrections else "export"
                        counts[upsert_example(session, record, source=source, now=now)] += 1
                    _poll_state(session, system).export_cursor = run.dump()
                break
            except IntegrityError:
                # another process exported the same ticket at the same moment: the retry updates it
                if attempt == 2:
                    raise
        stats.tickets += len(items)
        stats.new += counts["new"]
        stats.updated += counts["updated"]
        stats.unchanged += counts["unchanged"]
        stats.unlabelled += counts["unlabelled"]
        new_corrections = [c for c in found if c.is_new]
        stats.corrections += len(new_corrections)
        stats.corrections_found.extend(found)
        if self.on_correction is not None:
            for correction in new_corrections:
                self.on_correction(correction)

    def _finish(self, system: str, run: _RunState) -> None:
        overlap = timedelta(minutes=self.config.learning.export_overlap_minutes)
        with self.store.session() as session:
            state = _poll_state(session, system)
            state.export_since = run.started - overlap
            state.export_cursor = None
            state.last_export_at = self.clock()
