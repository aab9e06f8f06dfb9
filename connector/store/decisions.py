"""Repository of the routing engine's tables: ``decisions`` and ``poll_state``.

A ticket is decided once per system.  The pipeline *claims* a ticket by
inserting its decision row with status ``claimed``; the unique constraint on
``(system, ticket_id)`` makes a second claim fail with an IntegrityError, so
two daemons on one database (or a restart, or an overlapping poll) never
route a ticket twice.  The claim is then *finished* with an outcome.  Claims
left unfinished by a crash are listed by :meth:`DecisionStore.unfinished` and
reconciled by the pipeline.

Every method runs its own short transaction and is synchronous; the pipeline
calls them from a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.store.db import Store, as_utc, detach, utcnow
from connector.store.leases import leases_of
from connector.store.tables import Decision, PollState

class DecisionStatus(StrEnum):
    """A decision's status as stored (the values are the ``status`` column's strings).

    A row starts ``claimed`` (the pipeline is writing the ticket) and ends in
    one of the final statuses; dry-run, skipped and some failed decisions are
    recorded final right away.
    """

    CLAIMED = "claimed"
    APPLIED = "applied"
    SUGGESTED = "suggested"
    DRY_RUN = "dry_run"
    SKIPPED = "skipped"
    CHANGED = "changed"
    FAILED = "failed"


CLAIMED = DecisionStatus.CLAIMED
#: final statuses of a decision
FINAL_STATUSES = tuple(s for s in DecisionStatus if s is not DecisionStatus.CLAIMED)
#: statuses whose row means "the daemon wrote (or meant to write) to the ticket"
ROUTED = DecisionStatus.APPLIED
#: ``applied["note"]`` of a claim whose note is being sent (it may be on the ticket)
NOTE_PENDING = "pending"

_IN_CHUNK = 500  # ids per IN (...) clause


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A decision row, detached from the session."""

    id: int
    system: str
    ticket_id: str
    status: DecisionStatus
    mode: str
    claimed_by: str
    claimed_at: datetime
    decided_at: datetime | None
    model_version: str | None
    predictions: dict[str, Any]
    original: dict[str, Any]
    planned: dict[str, Any]
    applied: dict[str, Any]
    reason: str | None
    error: str | None
    attempts: int

    @classmethod
    def from_row(cls, row: Decision) -> DecisionRecord:
        return detach(
            cls,
            row,
            status=DecisionStatus(row.status),
            predictions=dict(row.predictions or {}),
            original=dict(row.original or {}),
            planned=dict(row.planned or {}),
            applied=dict(row.applied or {}),
            attempts=row.attempts or 0,
        )

    @property
    def note_pending(self) -> bool:
        """Sending the note may have begun (:meth:`DecisionStore.mark_writing`): look for it before writing it."""
        return self.applied.get("note") == NOTE_PENDING or self.attempts > 0


@dataclass(frozen=True, slots=True)
class PollHealth:
    """A system's poll state as stored."""

    system: str
    cursor: str | None = None
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0


@dataclass(slots=True)
class NewDecision:
    """What the pipeline knows about a ticket when it claims or records it."""

    system: str
    ticket_id: str
    mode: str
    model_version: str | None = None
    predictions: dict[str, Any] = field(default_factory=dict)
    original: dict[str, Any] = field(default_factory=dict)
    planned: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """How a decision ends: the final status, why, the error (if any) and what is on the ticket."""

    ticket_id: str
    status: DecisionStatus
    reason: str | None = None
    error: str | None = None
    applied: dict[str, Any] | None = None


@dataclass(slots=True)
class FinalRecord:
    """A decision recorded final at once, without a claim (dry-run, skipped, failed before any write)."""

    new: NewDecision
    outcome: Outcome


def final_status(status: str) -> DecisionStatus:
    """``status`` as a final :class:`DecisionStatus`; ValueError for ``claimed`` or an unknown string."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"not a final status: {status!r}")
    return DecisionStatus(status)


class DecisionStore:
    """Claims, outcomes, cursors and poll health on top of a :class:`Store`."""

    def __init__(self, store: Store, instance_id: str) -> None:
        self.store = store
        self.instance_id = instance_id

    # ------------------------------------------------------------------ decisions

    def decided_ids(self, system: str, ticket_ids: Iterable[str]) -> set[str]:
        """Those of ``ticket_ids`` that already have a decision row (finished or claimed)."""
        ids = list(dict.fromkeys(ticket_ids))
        found: set[str] = set()
        with self.store.session() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                found.update(
                    session.scalars(
                        select(Decision.ticket_id).where(Decision.system == system, Decision.ticket_id.in_(chunk))
                    )
                )
        return found

    def claim(self, new: NewDecision) -> bool:
        """Insert the ticket's decision as ``claimed`` by this instance; False if it already has one."""
        return self._insert(new, None) is not None

    def record(
        self,
        new: NewDecision,
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        applied: Mapping[str, Any] | None = None,
    ) -> bool:
        """Insert an already-final decision (dry_run, skipped, failed before any claim); False if decided before."""
        outcome = Outcome(new.ticket_id, final_status(status), reason, error, dict(applied or {}))
        return self._insert(new, outcome) is not None

    def _insert(self, new: NewDecision, outcome: Outcome | None) -> int | None:
        """The new row (claimed, or final with ``outcome``)'s id, or None when the ticket had a decision already."""
        row = Decision(**self._row_values(new, outcome, utcnow()))
        try:
            with self.store.session() as session:
                session.add(row)
        except IntegrityError:
            return None
        return row.id

    def claim_many(self, claims: Sequence[NewDecision], finals: Sequence[FinalRecord] = ()) -> dict[str, int]:
        """In one transaction: claim ``claims`` and record ``finals``.

        Returns the ticket ids this call inserted, each with its decision's id
        (the marker in the ticket's note); the others had a decision already
        (another daemon, an overlapping poll).  Uses ``INSERT … ON
        CONFLICT DO NOTHING`` (SQLite, PostgreSQL): one commit for a whole page.
        """
        for final in finals:
            final_status(final.outcome.status)
        rows: list[tuple[NewDecision, Outcome | None]] = [(new, None) for new in claims]
        rows += [(final.new, final.outcome) for final in finals]
        if not rows:
            return {}
        dialect = self.store.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:  # one transaction per row elsewhere
            inserted = [(new.ticket_id, self._insert(new, outcome)) for new, outcome in rows]
            return {ticket_id: row_id for ticket_id, row_id in inserted if row_id is not None}
        now = utcnow()
        values = [self._row_values(new, outcome, now) for new, outcome in rows]
        statement = (
            dialect_insert(Decision.__table__)
            .on_conflict_do_nothing(index_elements=["system", "ticket_id"])
            .returning(Decision.__table__.c.ticket_id, Decision.__table__.c.id)
        )
        with self.store.session() as session:
            # one multi-row INSERT … RETURNING per batch ("insertmanyvalues"): conflicting rows return nothing
            return {str(t): int(i) for t, i in session.connection().execute(statement, values).all()}

    def _own_claim(self, system: str) -> tuple[Any, ...]:
        """The WHERE terms of this instance's unfinished claims in ``system`` (the table's columns)."""
        table = Decision.__table__
        return (table.c.system == system, table.c.status == CLAIMED.value, table.c.claimed_by == self.instance_id)

    def finish_many(self, system: str, outcomes: Sequence[Outcome]) -> int:
        """Finish several of this instance's claims in one transaction; returns how many were claims of ours."""
        if not outcomes:
            return 0
        table = Decision.__table__
        statement = (
            update(table)
            .where(table.c.ticket_id == bindparam("b_ticket_id"), *self._own_claim(system))
            .values(
                status=bindparam("b_status"),
                decided_at=utcnow(),
                reason=bindparam("b_reason"),
                error=bindparam("b_error"),
                applied=bindparam("b_applied", type_=table.c.applied.type),
            )
        )
        params = [
            {"b_ticket_id": o.ticket_id, "b_status": final_status(o.status).value, "b_reason": o.reason,
             "b_error": o.error, "b_applied": dict(o.applied or {})}
            for o in outcomes
        ]
        with self.store.session() as session:
            result = session.connection().execute(statement, params)
            return int(result.rowcount or 0)

    def release_many(self, system: str, ticket_ids: Iterable[str]) -> int:
        """Drop several of this instance's unfinished claims (their write never started)."""
        ids = list(ticket_ids)
        released = 0
        table = Decision.__table__
        with self.store.session() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                result = session.execute(delete(table).where(table.c.ticket_id.in_(chunk), *self._own_claim(system)))
                released += result.rowcount or 0
        return released

    def _row_values(self, new: NewDecision, outcome: Outcome | None, now: datetime) -> dict[str, Any]:
        """A new row: claimed by this instance (``outcome`` None), or final with ``outcome``."""
        return {
            "system": new.system,
            "ticket_id": new.ticket_id,
            "status": CLAIMED.value if outcome is None else final_status(outcome.status).value,
            "mode": new.mode,
            "claimed_by": self.instance_id,
            "claimed_at": now,
            "decided_at": None if outcome is None else now,
            "model_version": new.model_version,
            "predictions": new.predictions,
            "original": new.original,
            "planned": new.planned,
            "applied": dict(outcome.applied or {}) if outcome is not None else {},
            "reason": outcome.reason if outcome is not None else None,
            "error": outcome.error if outcome is not None else None,
            "attempts": 0,
        }

    def mark_writing(self, system: str, ticket_id: str) -> None:
        """Record that the note is about to be sent (``applied = {"note": "pending"}``, ``attempts`` + 1).

        From then on the note may be on the ticket: reconciliation looks for it
        (:attr:`DecisionRecord.note_pending`) instead of writing it blindly.
        """
        table = Decision.__table__
        with self.store.session() as session:
            session.execute(
                update(table)
                .where(table.c.ticket_id == ticket_id, *self._own_claim(system))
                .values(attempts=table.c.attempts + 1, applied={"note": NOTE_PENDING})
            )

    def finish(
        self,
        system: str,
        ticket_id: str,
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        applied: Mapping[str, Any] | None = None,
    ) -> bool:
        """Turn this instance's claim into a final decision; False when no such claim exists."""
        outcome = Outcome(ticket_id, final_status(status), reason, error, dict(applied or {}))
        return self.finish_many(system, [outcome]) == 1

    def release(self, system: str, ticket_id: str) -> bool:
        """Drop this instance's unfinished claim so the ticket is decided afresh by a later poll."""
        return self.release_many(system, [ticket_id]) == 1

    def unfinished(self, system: str, claim_timeout: float) -> list[DecisionRecord]:
        """Claims to reconcile: this instance's own, and those of instances that are no longer running.

        An owner is no longer running when its lease (:mod:`connector.store.leases`)
        is not live: expired, released on a clean stop, or held by a process of
        this host that has exited.  Claims of a live owner are never touched,
        however old.  Owners without any lease row (claims written by versions
        before leases, or rows pruned long after expiry) fall back to age: their
        claims older than ``claim_timeout`` seconds count as abandoned.

        Abandoned claims are taken over (``claimed_by`` set to this instance)
        atomically, so two daemons never reconcile the same ticket.
        """
        cutoff = utcnow() - timedelta(seconds=claim_timeout)
        out: list[DecisionRecord] = []
        with self.store.session() as session:
            rows = session.scalars(
                select(Decision)
                .where(Decision.system == system, Decision.status == CLAIMED.value)
                .order_by(Decision.claimed_at)
            ).all()
            leases = leases_of(session, {r.claimed_by for r in rows} - {self.instance_id})
            now = utcnow()
            live = {owner for owner, lease in leases.items() if lease.is_live(now)}
            candidates = [
                (r.ticket_id, r.claimed_by, r.claimed_at)
                for r in rows
                if r.claimed_by == self.instance_id
                or (r.claimed_by in leases and r.claimed_by not in live)
                or (r.claimed_by not in leases and as_utc(r.claimed_at) < cutoff)  # type: ignore[operator]
            ]
        for ticket_id, owner, claimed_at in candidates:
            if owner != self.instance_id and not self._take_over(system, ticket_id, owner, claimed_at):
                continue
            record = self.get(system, ticket_id)
            if record is not None and record.status == CLAIMED and record.claimed_by == self.instance_id:
                out.append(record)
        return out

    def _take_over(self, system: str, ticket_id: str, owner: str, claimed_at: datetime) -> bool:
        with self.store.session() as session:
            result = session.execute(
                update(Decision)
                .where(
                    Decision.system == system,
                    Decision.ticket_id == ticket_id,
                    Decision.status == CLAIMED.value,
                    Decision.claimed_by == owner,
                    Decision.claimed_at == claimed_at,
                )
                .values(claimed_by=self.instance_id, claimed_at=utcnow())
            )
            return result.rowcount == 1

    def get(self, system: str, ticket_id: str) -> DecisionRecord | None:
        with self.store.session() as session:
            row = session.scalars(
                select(Decision).where(Decision.system == system, Decision.ticket_id == ticket_id)
            ).first()
            return DecisionRecord.from_row(row) if row is not None else None

    def recent(self, system: str | None = None, *, limit: int = 50, status: str | None = None) -> list[DecisionRecord]:
        """The newest decisions, newest first."""
        query = select(Decision).order_by(Decision.claimed_at.desc(), Decision.id.desc()).limit(limit)
        if system is not None:
            query = query.where(Decision.system == system)
        if status is not None:
            query = query.where(Decision.status == status)
        with self.store.session() as session:
            return [DecisionRecord.from_row(r) for r in session.scalars(query)]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{system: {status: count}}`` over all decisions."""
        out: dict[str, dict[str, int]] = {}
        with self.store.session() as session:
            for system, status, count in session.execute(
                select(Decision.system, Decision.status, func.count()).group_by(Decision.system, Decision.status)
            ):
                out.setdefault(system, {})[status] = int(count)
        return out

    def forget_failed(self, system: str) -> int:
        """Delete the system's ``failed`` decisions so a later poll tries those tickets again."""
        with self.store.session() as session:
            failed = DecisionStatus.FAILED.value
            result = session.execute(delete(Decision).where(Decision.system == system, Decision.status == failed))
            return int(result.rowcount or 0)

    # ------------------------------------------------------------------ poll state

    @staticmethod
    def _poll_row(session: Session, system: str) -> PollState:
        row = session.get(PollState, system)
        if row is not None:
            return row
        try:
            with session.begin_nested():
                row = PollState(system=system, consecutive_failures=0)
                session.add(row)
        except IntegrityError:  # another daemon created it just now
            row = session.get(PollState, system, populate_existing=True)
            assert row is not None
        return row

    def get_cursor(self, system: str) -> str | None:
        with self.store.session() as session:
            row = session.get(PollState, system)
            return row.cursor if row is not None else None

    def set_cursor(self, system: str, cursor: str | None) -> None:
        with self.store.session() as session:
            self._poll_row(session, system).cursor = cursor

    def poll_started(self, system: str) -> None:
        with self.store.session() as session:
            self._poll_row(session, system).last_poll_at = utcnow()

    def poll_succeeded(self, system: str) -> None:
        with self.store.session() as session:
            row = self._poll_row(session, system)
            row.last_success_at = utcnow()
            row.consecutive_failures = 0

    def poll_failed(self, system: str, error: str) -> int:
        """Record a failed poll; returns the number of consecutive failures."""
        with self.store.session() as session:
            row = self._poll_row(session, system)
            row.last_error = error[:4000]
            row.last_error_at = utcnow()
            row.consecutive_failures = (row.consecutive_failures or 0) + 1
            return row.consecutive_failures

    def health(self) -> dict[str, PollHealth]:
        with self.store.session() as session:
            return {
                row.system: PollHealth(
                    system=row.system,
                    cursor=row.cursor,
                    last_poll_at=as_utc(row.last_poll_at),
                    last_success_at=as_utc(row.last_success_at),
                    last_error=row.last_error,
                    last_error_at=as_utc(row.last_error_at),
                    consecutive_failures=row.consecutive_failures or 0,
                )
                for row in session.scalars(select(PollState))
            }
