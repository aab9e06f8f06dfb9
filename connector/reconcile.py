"""Reconciliation: finish the claims a crash or an outage left unfinished, by re-reading their tickets.

At the start of every poll (:meth:`connector.pipeline.Pipeline.poll`) the
claims of this instance, and those of instances whose lease is no longer live
(:meth:`connector.store.decisions.DecisionStore.unfinished`), are completed:
the planned fields are compared with the ticket, the note is looked up by its
marker where it may have been sent, and what is missing is written
(:meth:`connector.writer.TicketWriter.complete`).  A ticket someone else
changed meanwhile is recorded ``changed``; one that is gone, too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.base import AuthenticationError, NotFoundError, PermanentError, Ticket, TransientError
from connector.routing import change_from_planned, note_marker
from connector.store.decisions import DecisionRecord, DecisionStatus
from connector.writer import LoggedOutcome, PageRun, TicketWriter, WriteState

if TYPE_CHECKING:
    from connector.pipeline import PollResult

log = logging.getLogger("connector.pipeline")  # the pipeline's log: one stream of decision lines


class PollAborted(Exception):
    """The poll stopped early because the helpdesk is unavailable or rejected the credentials."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def record_labels(record: DecisionRecord) -> str:
    """The log's labels from a stored decision's predictions (reconciliation has no Prediction object)."""
    parts = []
    for name, value in record.predictions.items():
        if isinstance(value, dict) and "label" in value:
            confidence = value.get("confidence")
            parts.append(f"{name}={value['label']}" + (f"({confidence:.2f})" if isinstance(confidence, float) else ""))
    return " ".join(parts) or "-"


async def reconcile(writer: TicketWriter, result: PollResult, claim_timeout: float, stopping: Callable[[], bool]) -> int:
    """Finish claims left by a crash or an outage: re-read each ticket and complete it.  Returns how many."""
    records = await writer.db(writer.decisions.unfinished, writer.name, claim_timeout)
    if not records:
        return 0
    log.info("%s: reconciling %d unfinished claim(s)", writer.name, len(records))
    run = PageRun(result)
    try:
        for record in records:
            if stopping():
                break
            await reconcile_one(writer, record, run)
            result.reconciled += 1
    finally:
        await writer.settle(run.take_pending(), set())
    return result.reconciled


async def _look(writer: TicketWriter, w: WriteState, record: DecisionRecord, current: Ticket) -> None:
    """Set what of ``w`` the re-read ticket shows: the fields, and the note where it may have been sent."""
    fields = w.fields
    w.fields_done = bool(fields) and all(getattr(current, k) == v for k, v in fields.items())
    if w.change.note is not None and (record.note_pending or (w.fields_done and writer.adapter.note_in_update)):
        w.note_on_ticket = None  # it may have been sent: look for it, whatever happened to the ticket since
        marker = note_marker(record.id)
        w.note_on_ticket = await writer.call("find_note", writer.adapter.find_note(w.ticket_id, marker))


def _done_reason(w: WriteState, shown: bool) -> str:
    if shown:
        return "reconciled: the ticket shows the planned values" + (
            "; the note was written after restart" if w.change.note is not None else "")
    return "reconciled: write finished after restart"


async def reconcile_one(writer: TicketWriter, record: DecisionRecord, run: PageRun) -> None:
    """Complete one claim: the fields are verified on the ticket, the note is looked up by its marker."""
    ticket_id = record.ticket_id
    labels = record_labels(record)
    final = DecisionStatus.SUGGESTED if record.mode == "suggest" else DecisionStatus.APPLIED
    w = WriteState(ticket_id, change_from_planned(record.planned), record.id, pending_recorded=record.note_pending)
    try:
        current = await writer.call("get", writer.adapter.get_ticket(ticket_id))
        await _look(writer, w, record, current)
        fields = w.fields
        if w.note_on_ticket is True:  # the note follows the fields: the whole write had been done
            reason = "the ticket shows the planned values and the note" if w.fields_done else "the note is on the ticket"
            w.fields_done = bool(fields)
            run.finish(LoggedOutcome(ticket_id, final, f"reconciled: {reason}", None, w.applied(), labels))
            return
        if not w.fields_done:
            partially_written = any(getattr(current, k) == v for k, v in fields.items())
            reason = writer.changed_reason(record.original, current, allowed=fields if partially_written else None)
            if reason is not None:
                run.finish(LoggedOutcome(ticket_id, DecisionStatus.CHANGED,
                                         f"reconciled: changed by someone else: {reason}", labels=labels))
                return
        shown = w.fields_done
        await writer.complete(w)
    except NotFoundError:
        run.finish(LoggedOutcome(ticket_id, DecisionStatus.CHANGED, "reconciled: ticket no longer exists", labels=labels))
        return
    except (TransientError, AuthenticationError) as exc:
        raise PollAborted(exc) from exc
    except PermanentError as exc:
        run.finish(w.refused(exc, final, "reconciliation", labels))
        return
    run.finish(LoggedOutcome(ticket_id, final, _done_reason(w, shown), None, w.applied(), labels))
