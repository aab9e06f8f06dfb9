"""Writing one claimed ticket: the fields, then the note, never twice; shared by the pipeline and reconciliation.

:meth:`TicketWriter.complete` writes what of a decision's change is not on
the ticket yet: the fields, with the note in the same request where the
system takes both (``adapter.note_in_update``); elsewhere the note follows as
a second request, after the store has recorded it as pending.  Every note
carries its decision's id (:func:`connector.routing.note_marker`).  An
unclear failure of the note request (timeout, 5xx) is retried with backoff,
and each retry first looks for the note (``adapter.find_note``).

The outcomes of a batch of claimed tickets (a page, or one reconciliation)
are gathered in a :class:`PageRun`, stored together, then logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from adapters.base import Adapter, AuthenticationError, PermanentError, Ticket, TicketChange, TransientError
from adapters.http import RetryPolicy, WaitRetryAfter
from connector import metrics
from connector.routing import note_marker, with_marker
from connector.store.decisions import DecisionStatus, DecisionStore, Outcome

if TYPE_CHECKING:
    from connector.pipeline import PollResult

log = logging.getLogger("connector.pipeline")

T = TypeVar("T")


def describe_error(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def _unclear(exc: BaseException) -> bool:
    """A transient failure after which the request may have been applied (timeout, 5xx): look, then retry."""
    return isinstance(exc, TransientError) and not exc.not_applied


@dataclass(slots=True)
class LoggedOutcome(Outcome):
    """A claimed ticket's outcome with the labels its log line shows: stored first, then logged once."""

    #: the predictions as the log line shows them
    labels: str = "-"

    def log_detail(self) -> tuple[str, int]:
        if self.status == DecisionStatus.FAILED:
            return f"error={self.error!r}", logging.WARNING
        if self.status == DecisionStatus.CHANGED:
            return f"reason={self.reason!r}", logging.INFO
        detail = ",".join(f"{k}:{v!r}" for k, v in (self.applied or {}).items() if k != "note")
        note = (self.applied or {}).get("note")
        text = f"set={detail}" if detail else "note only"
        if note is not None and note is not True:
            text += f" note={note!r}" + (f" error={self.error!r}" if self.error else "")
        return text, logging.WARNING if self.error else logging.INFO


@dataclass(slots=True)
class PageRun:
    """One batch of claimed tickets being written: what started, what to release, the outcomes to store."""

    result: PollResult
    #: tickets whose write task began (the others' claims are released)
    started: set[str] = field(default_factory=set)
    #: claims whose write surely did not reach the helpdesk
    to_release: set[str] = field(default_factory=set)
    #: outcomes not stored yet
    pending: list[LoggedOutcome] = field(default_factory=list)
    #: why the batch stopped (the helpdesk is down or refuses us)
    abort: BaseException | None = None

    def finish(self, outcome: LoggedOutcome) -> None:
        """Queue the outcome of a claimed ticket: stored, then logged, when the batch settles."""
        self.pending.append(outcome)
        self.result.outcomes[outcome.status] += 1

    def take_pending(self) -> list[LoggedOutcome]:
        pending, self.pending = self.pending, []
        return pending


@dataclass(slots=True)
class WriteState:
    """How much of one decision's change is on the ticket (shared by the normal path and reconciliation)."""

    ticket_id: str
    change: TicketChange
    decision_id: int
    #: the planned queue/priority are on the ticket
    fields_done: bool = False
    #: the note is on the ticket: False surely not, None perhaps (look before writing it), True yes
    note_on_ticket: bool | None = False
    #: the store records the note as pending (DecisionStore.mark_writing)
    pending_recorded: bool = False
    #: a request that may have changed the ticket was sent: the claim must not be released
    started: bool = False

    @property
    def fields(self) -> dict[str, str]:
        return {k: v for k, v in (("queue", self.change.queue), ("priority", self.change.priority)) if v is not None}

    def applied(self) -> dict[str, Any]:
        """The ``applied`` column: the fields on the ticket and whether the note is (``"unverified"``: unknown)."""
        out: dict[str, Any] = dict(self.fields) if self.fields_done else {}
        if self.change.note is not None:
            out["note"] = "unverified" if self.note_on_ticket is None else self.note_on_ticket
        return out

    def refused(self, exc: PermanentError, status: DecisionStatus, reason: str, labels: str) -> LoggedOutcome:
        """The outcome when the helpdesk refused part of the write for good."""
        error = describe_error(exc)
        if self.note_on_ticket is None:  # an unclear attempt, then no way to look: never sent again
            return LoggedOutcome(self.ticket_id, status, f"{reason}; the note could not be verified", error,
                                 self.applied(), labels)
        if self.fields_done:  # the ticket is moved: its record says so, and that the note was not written
            return LoggedOutcome(self.ticket_id, status, f"{reason}; the note was not written", error, self.applied(),
                                 labels)
        return LoggedOutcome(self.ticket_id, DecisionStatus.FAILED, "the helpdesk refused the change", error, None,
                             labels)


class TicketWriter:
    """The requests that change a ticket, for one system."""

    def __init__(self, name: str, adapter: Adapter, decisions: DecisionStore, note_retry: RetryPolicy) -> None:
        self.name = name
        self.adapter = adapter
        self.decisions = decisions
        #: backoff for a note request that failed unclearly (each retry looks for the note first)
        self.note_retry = note_retry

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def call(self, operation: str, awaitable: Awaitable[T]) -> T:
        metrics.HELPDESK_CALLS.labels(system=self.name, operation=operation).inc()
        return await awaitable

    def changed_reason(self, fetched: dict[str, Any], current: Ticket, *, allowed: dict[str, Any] | None = None) -> str | None:
        """Why ``current`` (re-read) may not be written any more, or None when it is as fetched."""
        for name in ("queue", "priority", "state"):
            before = fetched.get(name)
            now = getattr(current, name)
            if before is None or now == before:
                continue
            if allowed is not None and name in allowed and now == allowed[name]:
                continue
            return f"{name} changed from {before!r} to {now!r} since it was fetched"
        if allowed is None and not self.adapter.is_candidate(current):
            return f"no longer a candidate (queue {current.queue!r}, state {current.state!r})"
        return None

    async def complete(self, w: WriteState) -> None:
        """Write what of ``w.change`` is not on the ticket yet: the fields, then the note, never twice.

        Where the system takes both in one request (``adapter.note_in_update``)
        the note goes with the fields.  Elsewhere the store first records the
        note as pending, then the note is sent (:meth:`_add_note`).
        """
        note = with_marker(w.change.note, w.decision_id) if w.change.note is not None else None
        if w.fields and not w.fields_done:
            together = note is not None and self.adapter.note_in_update and w.note_on_ticket is False
            change = TicketChange(
                queue=w.change.queue,
                priority=w.change.priority,
                note=note if together else None,
                note_subject=w.change.note_subject,
            )
            await self._send(w, "update", self.adapter.update_ticket(w.ticket_id, change))
            w.fields_done = True
            if together:
                w.note_on_ticket = True
        if note is not None and w.note_on_ticket is not True:
            if not w.pending_recorded:
                await self.db(self.decisions.mark_writing, self.name, w.ticket_id)
                w.pending_recorded = True
            await self._add_note(w, note)

    async def _send(self, w: WriteState, operation: str, awaitable: Awaitable[None]) -> None:
        """One request that may change the ticket; ``w.started`` unless the error proves it was refused."""
        refused = False
        try:
            await self.call(operation, awaitable)
        except (TransientError, AuthenticationError) as exc:
            refused = isinstance(exc, AuthenticationError) or exc.not_applied
            raise
        finally:
            w.started = w.started or not refused

    async def _add_note(self, w: WriteState, note: str) -> None:
        """Send the note; after an unclear failure (timeout, 5xx) wait (backoff, Retry-After), look for it, resend.

        Refusals that surely were not applied (429, 503, connection refused)
        were retried by the adapter's transport already; they end the attempt.
        """
        marker = note_marker(w.decision_id)
        retrying = AsyncRetrying(
            retry=retry_if_exception(_unclear),
            stop=stop_after_attempt(max(1, self.note_retry.attempts)),
            wait=WaitRetryAfter(self.note_retry),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if w.note_on_ticket is None and await self.call("find_note", self.adapter.find_note(w.ticket_id, marker)):
                    w.note_on_ticket = True
                    return
                try:
                    await self._send(w, "note", self.adapter.add_note(w.ticket_id, note, w.change.note_subject))
                except TransientError as exc:
                    if not exc.not_applied:
                        w.note_on_ticket = None
                    raise
                w.note_on_ticket = True

    def log_decision(self, ticket_id: str, labels: str, status: str, detail: str = "", *, level: int = logging.INFO) -> None:
        """The one log line (and metric) of a decision; called once it is stored."""
        metrics.TICKET_DECISIONS.labels(system=self.name, outcome=status).inc()
        log.log(
            level,
            "decision system=%s ticket=%s %s action=%s%s",
            self.name,
            ticket_id,
            labels,
            status,
            f" {detail}" if detail else "",
        )

    async def settle(self, pending: list[LoggedOutcome], release: set[str], *, in_cancellation: bool = False) -> None:
        """Store the outcomes, then log them; drop the claims whose write never started (one transaction each).

        While the task is being cancelled there is no more awaiting: a few ms of blocking is fine.
        """
        if in_cancellation:
            if pending:
                self.decisions.finish_many(self.name, pending)
                self._log_stored(pending)
            if release:
                self.decisions.release_many(self.name, release)
                log.info("%s: %d claim(s) released (their write had not started)", self.name, len(release))
            return
        if pending:
            await self.db(self.decisions.finish_many, self.name, pending)
            self._log_stored(pending)
        if release:
            await self.db(self.decisions.release_many, self.name, release)
            log.debug("%s: %d claim(s) released", self.name, len(release))

    def _log_stored(self, outcomes: list[LoggedOutcome]) -> None:
        for outcome in outcomes:
            detail, level = outcome.log_detail()
            self.log_decision(outcome.ticket_id, outcome.labels, outcome.status, detail, level=level)
