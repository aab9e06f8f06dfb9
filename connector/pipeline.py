"""One poll of one system: list, drop decided, classify, decide, claim, re-read, write, record.

Per poll of a system (:meth:`Pipeline.poll`):

1. reconcile claims left unfinished by a crash (this instance's, or those of
   instances whose lease is no longer live) by re-reading those tickets;
2. page through ``adapter.list_new_tickets`` (the cursor is committed after
   each fully handled page; at most ``max_tickets_per_poll`` new tickets);
3. drop tickets that already have a decision;
4. read the full ticket only where the listing had no body;
5. clean the text (:func:`connector.text.ticket_text`) and classify the page
   in a worker thread, so the event loop stays responsive;
6. decide (:func:`connector.routing.decide`);
7. per ticket, with at most ``max_concurrent_writes`` in flight: claim the
   ticket in the store (a unique row: nobody else routes it), re-read it, and
   write only if it is still a candidate and nobody changed its queue,
   priority or state since it was fetched; record the outcome, and log it
   once it is stored.

Writing (:meth:`Pipeline._complete`): the fields, with the note in the same
request where the system takes both (``adapter.note_in_update``); elsewhere
the note follows as a second request, after the store has recorded it as
pending.  Every note carries its decision's id
(:func:`connector.routing.note_marker`).  An unclear failure of the note
request (timeout, 5xx) is retried with backoff, and each retry first looks
for the note (``adapter.find_note``): a note is written once, never twice.

Errors: a :class:`~adapters.base.TransientError` (helpdesk down, 5xx, 429,
timeout) or an :class:`~adapters.base.AuthenticationError` stops the poll:
claims whose write surely did not reach the helpdesk are released; the
others (a request that may have been applied, fields written but the note
not yet) stay and are completed by reconciliation at the next poll, as
after a crash.  The cursor is not advanced, and the next poll retries.  Any
other :class:`~adapters.base.PermanentError` concerns one ticket: it is
recorded as ``failed`` with the cause (or, when the fields were written and
only the note was refused, with its final status and the note's error) and
the poll goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from adapters.base import (
    Adapter,
    AdapterError,
    AuthenticationError,
    NotFoundError,
    PermanentError,
    Ticket,
    TicketChange,
    TransientError,
)
from adapters.http import RetryPolicy, WaitRetryAfter
from connector import metrics
from connector.config import SystemConfig
from connector.model.classifier import Classifier, ClassifierHolder, ModelLoadError, Prediction
from connector.routing import RoutingDecision, change_from_planned, decide, note_marker, with_marker
from connector.store.decisions import DecisionRecord, DecisionStore, NewDecision
from connector.text import ticket_text

log = logging.getLogger(__name__)

T = TypeVar("T")

_classify_executor: ThreadPoolExecutor | None = None


def classify_executor() -> ThreadPoolExecutor:
    """The one worker thread that runs the CPU/GPU-bound classifier for every system."""
    global _classify_executor
    if _classify_executor is None:
        _classify_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
    return _classify_executor


class PollAborted(Exception):
    """The poll stopped early because the helpdesk is unavailable or rejected the credentials."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(slots=True)
class PollResult:
    system: str
    listed: int = 0
    new: int = 0
    reconciled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: why the poll stopped early (None: it completed)
    error: BaseException | None = None
    #: the poll stopped because shutdown was requested
    stopped: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def retry_after(self) -> float | None:
        return self.error.retry_after if isinstance(self.error, TransientError) else None

    def summary(self) -> str:
        parts = [f"listed {self.listed}", f"new {self.new}"]
        parts += [f"{k} {v}" for k, v in sorted(self.outcomes.items())]
        if self.reconciled:
            parts.append(f"reconciled {self.reconciled}")
        return ", ".join(parts)


@dataclass(slots=True)
class _Page:
    """A classified, decided and claimed page (built in the worker thread)."""

    predictions: list[Prediction | BaseException] = field(default_factory=list)
    seconds: float = 0.0
    #: decisions recorded as final right away: (decision, status, reason, error)
    finals: list[tuple[NewDecision, str, str | None, str | None]] = field(default_factory=list)
    #: tickets to write: (ticket, prediction, decision, record)
    plans: list[tuple[Ticket, Prediction, RoutingDecision, NewDecision]] = field(default_factory=list)
    #: per final ticket: (prediction, log detail, log level)
    logs: dict[str, tuple[Prediction | None, str, int]] = field(default_factory=dict)
    #: ticket ids this page claimed or recorded, with their decision ids (the others belong to another daemon)
    won: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Outcome:
    """A claimed ticket's outcome: stored by :meth:`Pipeline._settle_batch`, then logged once."""

    ticket_id: str
    status: str
    reason: str | None = None
    error: str | None = None
    applied: dict[str, Any] | None = None
    #: the predictions as the log line shows them
    labels: str = "-"

    def row(self) -> tuple[str, str, str | None, str | None, dict[str, Any] | None]:
        return (self.ticket_id, self.status, self.reason, self.error, self.applied)

    def log_detail(self) -> tuple[str, int]:
        if self.status == "failed":
            return f"error={self.error!r}", logging.WARNING
        if self.status == "changed":
            return f"reason={self.reason!r}", logging.INFO
        detail = ",".join(f"{k}:{v!r}" for k, v in (self.applied or {}).items() if k != "note")
        note = (self.applied or {}).get("note")
        text = f"set={detail}" if detail else "note only"
        if note is not None and note is not True:
            text += f" note={note!r}" + (f" error={self.error!r}" if self.error else "")
        return text, logging.WARNING if self.error else logging.INFO


@dataclass(slots=True)
class _Write:
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


def _unclear(exc: BaseException) -> bool:
    """A transient failure after which the request may have been applied (timeout, 5xx): look, then retry."""
    return isinstance(exc, TransientError) and not exc.not_applied


def error_kind(exc: BaseException) -> str:
    """A short, bounded label for metrics and logs."""
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, AuthenticationError):
        return "authentication"
    if isinstance(exc, PermanentError):
        return "protocol" if exc.__class__.__name__ == "ProtocolError" else "permanent"
    if isinstance(exc, ModelLoadError):
        return "model"
    return "internal"


def describe_error(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def snapshot(ticket: Ticket) -> dict[str, Any]:
    """The routing-relevant state of a ticket as fetched (the ``original`` column)."""
    return {
        "queue": ticket.queue,
        "priority": ticket.priority,
        "state": ticket.state,
        "updated_at": ticket.updated_at.isoformat() if ticket.updated_at else None,
    }


def _labels(prediction: Prediction | None) -> str:
    if prediction is None:
        return "-"
    return " ".join(f"{name}={fp.label}({fp.confidence:.2f})" for name, fp in prediction.fields.items())


def _record_labels(record: DecisionRecord) -> str:
    """The log's labels from a stored decision's predictions (reconciliation has no Prediction object)."""
    parts = []
    for name, value in record.predictions.items():
        if isinstance(value, dict) and "label" in value:
            confidence = value.get("confidence")
            parts.append(f"{name}={value['label']}" + (f"({confidence:.2f})" if isinstance(confidence, float) else ""))
    return " ".join(parts) or "-"


class Pipeline:
    """Routes the new tickets of one system; one instance per configured system."""

    def __init__(
        self,
        name: str,
        system: SystemConfig,
        adapter: Adapter,
        decisions: DecisionStore,
        holder: ClassifierHolder,
        *,
        claim_timeout: float = 900.0,
        executor: Executor | None = None,
        stop_event: asyncio.Event | None = None,
        note_retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.system = system
        self.adapter = adapter
        self.decisions = decisions
        self.holder = holder
        self.claim_timeout = claim_timeout
        self.executor = executor
        self.stop_event = stop_event or asyncio.Event()
        #: backoff for a note request that failed unclearly (each retry looks for the note first)
        self.note_retry = note_retry or RetryPolicy()
        self._abort: BaseException | None = None
        self._started: set[str] = set()
        self._to_release: set[str] = set()
        self._pending: list[_Outcome] = []
        self._last_unexpected: str | None = None
        self._settle_task: asyncio.Task[None] | None = None
        metrics.init_system(name)

    # ------------------------------------------------------------------ helpers

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _call(self, operation: str, awaitable: Awaitable[T]) -> T:
        metrics.HELPDESK_CALLS.labels(system=self.name, operation=operation).inc()
        return await awaitable

    def _log_decision(self, ticket_id: str, labels: str, status: str, detail: str = "", *, level: int = logging.INFO) -> None:
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

    # ------------------------------------------------------------------ poll

    async def poll(self) -> PollResult:
        """One poll; never raises for helpdesk or model errors (they are in ``result.error``)."""
        result = PollResult(self.name)
        started = time.perf_counter()
        self._abort = None
        try:
            await self._db(self.decisions.poll_started, self.name)
            await self.reconcile(result)
            self.holder.current  # no model: fail before spending helpdesk calls on listing  # noqa: B018
            await self._poll_pages(result)
            self._last_unexpected = None
        except PollAborted as exc:
            result.error = exc.cause
        except (AdapterError, ModelLoadError) as exc:
            result.error = exc
        except asyncio.CancelledError:
            result.stopped = True
            raise
        except Exception as exc:  # a bug or a database failure: report it (traceback once), keep the daemon up
            if describe_error(exc) != self._last_unexpected:
                log.exception("%s: poll failed unexpectedly", self.name)
            self._last_unexpected = describe_error(exc)
            result.error = exc
        finally:
            result.seconds = time.perf_counter() - started
            metrics.POLL_DURATION.labels(system=self.name).observe(result.seconds)
        await self._record_health(result)
        return result

    async def _record_health(self, result: PollResult) -> None:
        try:
            if result.error is None:
                await self._db(self.decisions.poll_succeeded, self.name)
                metrics.POLLS.labels(system=self.name, result="ok").inc()
                metrics.SYSTEM_UP.labels(system=self.name).set(1)
                metrics.LAST_SUCCESSFUL_POLL.labels(system=self.name).set(time.time())
            else:
                await self._db(self.decisions.poll_failed, self.name, describe_error(result.error))
                metrics.POLLS.labels(system=self.name, result="error").inc()
                metrics.POLL_ERRORS.labels(system=self.name, kind=error_kind(result.error)).inc()
                metrics.SYSTEM_UP.labels(system=self.name).set(0)
        except Exception:  # the database is down: the scheduler still sees result.error
            log.exception("%s: cannot record poll health", self.name)

    async def _poll_pages(self, result: PollResult) -> None:
        cursor = await self._db(self.decisions.get_cursor, self.name)
        budget = self.system.max_tickets_per_poll
        pages = self.adapter.list_new_tickets(cursor, self.system.page_size)
        metrics.HELPDESK_CALLS.labels(system=self.name, operation="list").inc()
        try:
            async for page in pages:
                if self.stopping:
                    result.stopped = True
                    return
                result.listed += len(page.tickets)
                unique = list({t.id: t for t in page.tickets}.values())
                decided = await self._db(self.decisions.decided_ids, self.name, [t.id for t in unique])
                fresh = [t for t in unique if t.id not in decided]
                whole_page = len(fresh) <= budget
                fresh = fresh[:budget]
                if fresh:
                    result.new += len(fresh)
                    metrics.TICKETS_FETCHED.labels(system=self.name).inc(len(fresh))
                    whole_page = await self._process(fresh, result) and whole_page
                    budget -= len(fresh)
                if whole_page and page.cursor is not None:
                    await self._db(self.decisions.set_cursor, self.name, page.cursor)
                if self.stopping:
                    result.stopped = True
                    return
                if budget <= 0:
                    log.info("%s: max_tickets_per_poll (%d) reached; the rest waits for the next poll",
                             self.name, self.system.max_tickets_per_poll)
                    return
                metrics.HELPDESK_CALLS.labels(system=self.name, operation="list").inc()
        finally:
            try:
                await self._drain_settle()
            finally:
                aclose = getattr(pages, "aclose", None)
                if aclose is not None:
                    await aclose()

    # ------------------------------------------------------------------ one page

    async def _process(self, tickets: Sequence[Ticket], result: PollResult) -> bool:
        """Route a page of undecided tickets; False when some were left for later (shutdown).

        Store writes are batched: the page's claims (and its final records:
        dry-run, skipped, failed) go in one transaction, made in the worker
        thread right after classification; the page's outcomes go in another,
        written in the background while the next page is read.
        """
        tickets, unreadable = await self._with_bodies(tickets)
        classifier = self.holder.current if tickets else None  # one model for the whole page
        page = await self._classify_and_claim(classifier, tickets, unreadable)
        for new, status, _, _ in page.finals:
            if new.ticket_id in page.won:
                result.outcomes[status] += 1
                prediction, detail, level = page.logs[new.ticket_id]
                self._log_decision(new.ticket_id, _labels(prediction), status, detail, level=level)
        mine = [plan for plan in page.plans if plan[3].ticket_id in page.won]
        for plan in page.plans:
            if plan[3].ticket_id not in page.won:
                log.debug("%s: ticket %s is decided by another instance", self.name, plan[3].ticket_id)
        if not mine:
            return True
        await self._drain_settle()
        semaphore = asyncio.Semaphore(self.system.max_concurrent_writes)
        self._started = set()
        self._to_release = set()
        self._pending = []
        completed = False
        try:
            outcomes = await asyncio.gather(
                *(self._route(semaphore, t, p, d, page.won[n.ticket_id], result) for t, p, d, n in mine),
                return_exceptions=True,  # every ticket task ends before the poll goes on or fails
            )
            completed = True
        finally:
            unstarted = {plan[3].ticket_id for plan in mine} - self._started
            release = self._to_release | unstarted
            if completed:  # record in the background; _drain_settle() waits for it
                pending, self._pending = self._pending, []
                self._settle_task = asyncio.create_task(self._settle_batch(pending, release))
            else:
                await self._settle(release, in_cancellation=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if self._abort is not None:
            await self._drain_settle()
            raise PollAborted(self._abort)
        return all(outcomes)

    async def _drain_settle(self) -> None:
        """Wait for the outcomes of the previous page to be stored (raises if that failed)."""
        task, self._settle_task = self._settle_task, None
        if task is not None:
            await task

    async def _settle_batch(self, pending: list[_Outcome], release: set[str]) -> None:
        if pending:
            await self._db(self.decisions.finish_many, self.name, [o.row() for o in pending])
            self._log_stored(pending)
        if release:
            await self._db(self.decisions.release_many, self.name, release)
            log.debug("%s: %d claim(s) released", self.name, len(release))

    async def _settle(self, release: set[str], *, in_cancellation: bool = False) -> None:
        """Record the outcomes gathered so far and drop claims whose write never started (one transaction each)."""
        pending, self._pending = self._pending, []
        if in_cancellation:  # the task is being cancelled: no more awaiting, a few ms of blocking is fine
            if pending:
                self.decisions.finish_many(self.name, [o.row() for o in pending])
                self._log_stored(pending)
            if release:
                self.decisions.release_many(self.name, release)
                log.info("%s: %d claim(s) released (their write had not started)", self.name, len(release))
            return
        await self._settle_batch(pending, release)

    def _log_stored(self, outcomes: Sequence[_Outcome]) -> None:
        for outcome in outcomes:
            detail, level = outcome.log_detail()
            self._log_decision(outcome.ticket_id, outcome.labels, outcome.status, detail, level=level)

    async def _classify_and_claim(
        self, classifier: Classifier | None, tickets: Sequence[Ticket], unreadable: Sequence[tuple[Ticket, BaseException]]
    ) -> _Page:
        """In the worker thread: clean, classify, decide and claim the page (one transaction)."""

        def work() -> _Page:
            page = _Page()
            for ticket, exc in unreadable:
                new = NewDecision(self.name, ticket.id, self.system.mode, original=snapshot(ticket))
                page.finals.append((new, "failed", "cannot read the ticket", describe_error(exc)))
                page.logs[ticket.id] = (None, f"error={describe_error(exc)!r}", logging.WARNING)
            if tickets:
                assert classifier is not None
                page.predictions, page.seconds = self._predict(classifier, tickets)
            for ticket, prediction in zip(tickets, page.predictions, strict=True):
                if isinstance(prediction, BaseException):
                    new = NewDecision(self.name, ticket.id, self.system.mode, original=snapshot(ticket))
                    error = describe_error(prediction)
                    page.finals.append((new, "failed", "the classifier failed on this ticket's text", error))
                    page.logs[ticket.id] = (None, f"error={error!r}", logging.WARNING)
                    continue
                decision = decide(prediction, self.system, ticket)
                new = NewDecision(
                    system=self.name,
                    ticket_id=ticket.id,
                    mode=self.system.mode,
                    model_version=prediction.model_version,
                    predictions=dict(prediction.as_dict()),
                    original=snapshot(ticket),
                    planned=decision.planned(),
                )
                if decision.change is None:
                    page.finals.append((new, decision.status, decision.reason_text(), None))
                    page.logs[ticket.id] = (prediction, self._would(decision), logging.INFO)
                else:
                    page.plans.append((ticket, prediction, decision, new))
            if page.finals or page.plans:
                page.won = self.decisions.claim_many([plan[3] for plan in page.plans], page.finals)
            return page

        loop = asyncio.get_running_loop()
        page = await loop.run_in_executor(self.executor or classify_executor(), work)
        if tickets:
            metrics.CLASSIFICATION_SECONDS.labels(source="daemon").observe(page.seconds)
            metrics.BATCH_SIZE.labels(source="daemon").observe(len(tickets))
            for prediction in page.predictions:
                if isinstance(prediction, Prediction):
                    metrics.observe_predictions({f: fp.confidence for f, fp in prediction.fields.items()})
        return page

    async def _with_bodies(self, tickets: Sequence[Ticket]) -> tuple[list[Ticket], list[tuple[Ticket, BaseException]]]:
        """Read the full ticket where the listing had no body (bounded concurrency).

        Returns the readable tickets and those that failed permanently (each with its error).
        """
        semaphore = asyncio.Semaphore(self.system.max_concurrent_writes)

        async def full(ticket: Ticket) -> Ticket | BaseException:
            if ticket.body is not None:
                return ticket
            async with semaphore:
                try:
                    return await self._call("get", self.adapter.get_ticket(ticket.id))
                except AdapterError as exc:
                    return exc

        out: list[Ticket] = []
        failed: list[tuple[Ticket, BaseException]] = []
        fatal: BaseException | None = None
        for ticket, got in zip(tickets, await asyncio.gather(*(full(t) for t in tickets)), strict=True):
            if isinstance(got, Ticket):
                out.append(got)
            elif isinstance(got, (TransientError, AuthenticationError)):
                fatal = fatal or got
            elif isinstance(got, NotFoundError):
                log.debug("%s: ticket %s vanished before it was read", self.name, ticket.id)
            else:
                failed.append((ticket, got))
        if fatal is not None:
            raise PollAborted(fatal)
        return out, failed

    def _predict(self, classifier: Classifier, tickets: Sequence[Ticket]) -> tuple[list[Prediction | BaseException], float]:
        """Predictions in ticket order (worker thread); a text the model chokes on gets its exception instead."""
        texts = [ticket_text(t.subject, t.body, is_html=t.body_is_html or None) for t in tickets]
        start = time.perf_counter()
        try:
            predictions: list[Prediction | BaseException] = list(classifier.classify(texts))
        except ModelLoadError:
            raise
        except Exception:  # one bad text must not block the page: classify one by one
            log.warning("%s: classifying a batch of %d failed; retrying one by one", self.name, len(texts),
                        exc_info=True)
            predictions = []
            for text in texts:
                try:
                    predictions.extend(classifier.classify([text]))
                except ModelLoadError:
                    raise
                except Exception as exc:
                    predictions.append(exc)
        if len(predictions) != len(tickets):
            raise ModelLoadError(f"classifier returned {len(predictions)} predictions for {len(tickets)} texts")
        return predictions, time.perf_counter() - start

    # ------------------------------------------------------------------ one ticket

    def _changed_reason(self, fetched: dict[str, Any], current: Ticket, *, allowed: dict[str, Any] | None = None) -> str | None:
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

    async def _route(
        self,
        semaphore: asyncio.Semaphore,
        ticket: Ticket,
        prediction: Prediction,
        decision: RoutingDecision,
        decision_id: int,
        result: PollResult,
    ) -> bool:
        """Re-read, write and record one claimed ticket; False if it was not started."""
        async with semaphore:
            if self._abort is not None or self.stopping:
                return False
            self._started.add(ticket.id)
            await self._write_claimed(ticket.id, snapshot(ticket), decision, prediction, decision_id, result)
            return True

    @staticmethod
    def _would(decision: RoutingDecision) -> str:
        if not decision.would_set:
            return f"reason={decision.reason_text()!r}"
        return "would_set=" + ",".join(f"{k}:{v!r}" for k, v in decision.would_set.items())

    async def _write_claimed(
        self,
        ticket_id: str,
        original: dict[str, Any],
        decision: RoutingDecision,
        prediction: Prediction,
        decision_id: int,
        result: PollResult,
    ) -> None:
        assert decision.change is not None
        labels = _labels(prediction)
        w = _Write(ticket_id, decision.change, decision_id)
        try:
            try:
                current = await self._call("get", self.adapter.get_ticket(ticket_id))
            except NotFoundError:
                self._finish(_Outcome(ticket_id, "changed", "ticket no longer exists", labels=labels), result)
                return
            reason = self._changed_reason(original, current)
            if reason is not None:
                self._finish(_Outcome(ticket_id, "changed", f"changed by someone else: {reason}", labels=labels), result)
                return
            await self._complete(w)
        except (TransientError, AuthenticationError) as exc:
            # the system is down or refuses us: the poll stops; what may have reached the ticket is kept
            self._abort = self._abort or exc
            if w.started:
                log.debug("%s: ticket %s: %s during its write; completed by reconciliation at the next poll",
                         self.name, ticket_id, describe_error(exc))
            else:
                self._to_release.add(ticket_id)
                log.debug("%s: ticket %s released after %s", self.name, ticket_id, describe_error(exc))
            return
        except PermanentError as exc:
            self._finish(self._refused(w, exc, decision.status, decision.reason_text(), labels), result)
            return
        except asyncio.CancelledError:
            if w.started:
                log.warning("%s: ticket %s abandoned during its write; reconciled at the next poll", self.name, ticket_id)
            else:
                self._to_release.add(ticket_id)
                log.info("%s: ticket %s abandoned before its write", self.name, ticket_id)
            raise
        self._finish(_Outcome(ticket_id, decision.status, decision.reason_text(), None, w.applied(), labels), result)

    @staticmethod
    def _refused(w: _Write, exc: PermanentError, status: str, reason: str, labels: str) -> _Outcome:
        """The outcome when the helpdesk refused part of the write for good."""
        error = describe_error(exc)
        if w.note_on_ticket is None:  # an unclear attempt, then no way to look: never sent again
            return _Outcome(w.ticket_id, status, f"{reason}; the note could not be verified", error, w.applied(), labels)
        if w.fields_done:  # the ticket is moved: its record says so, and that the note was not written
            return _Outcome(w.ticket_id, status, f"{reason}; the note was not written", error, w.applied(), labels)
        return _Outcome(w.ticket_id, "failed", "the helpdesk refused the change", error, None, labels)

    def _finish(self, outcome: _Outcome, result: PollResult) -> None:
        """Queue the outcome of a claimed ticket; :meth:`_settle` stores it, then logs it."""
        self._pending.append(outcome)
        result.outcomes[outcome.status] += 1

    # ------------------------------------------------------------------ writing

    async def _complete(self, w: _Write) -> None:
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
                await self._db(self.decisions.mark_writing, self.name, w.ticket_id)
                w.pending_recorded = True
            await self._add_note(w, note)

    async def _send(self, w: _Write, operation: str, awaitable: Awaitable[None]) -> None:
        """One request that may change the ticket; ``w.started`` unless the error proves it was refused."""
        refused = False
        try:
            await self._call(operation, awaitable)
        except (TransientError, AuthenticationError) as exc:
            refused = isinstance(exc, AuthenticationError) or exc.not_applied
            raise
        finally:
            w.started = w.started or not refused

    async def _add_note(self, w: _Write, note: str) -> None:
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
                if w.note_on_ticket is None and await self._call("find_note", self.adapter.find_note(w.ticket_id, marker)):
                    w.note_on_ticket = True
                    return
                try:
                    await self._send(w, "note", self.adapter.add_note(w.ticket_id, note, w.change.note_subject))
                except TransientError as exc:
                    if not exc.not_applied:
                        w.note_on_ticket = None
                    raise
                w.note_on_ticket = True

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self, result: PollResult | None = None) -> int:
        """Finish claims left by a crash or an outage: re-read each ticket and complete it.  Returns how many."""
        result = result or PollResult(self.name)
        records = await self._db(self.decisions.unfinished, self.name, self.claim_timeout)
        if not records:
            return 0
        log.info("%s: reconciling %d unfinished claim(s)", self.name, len(records))
        self._pending = []
        try:
            for record in records:
                if self.stopping:
                    break
                await self._reconcile_one(record, result)
                result.reconciled += 1
        finally:
            await self._settle(set())
        return result.reconciled

    async def _reconcile_one(self, record: DecisionRecord, result: PollResult) -> None:
        """Complete one claim: the fields are verified on the ticket, the note is looked up by its marker."""
        ticket_id = record.ticket_id
        labels = _record_labels(record)
        final = "suggested" if record.mode == "suggest" else "applied"
        w = _Write(ticket_id, change_from_planned(record.planned), record.id, pending_recorded=record.note_pending)
        try:
            current = await self._call("get", self.adapter.get_ticket(ticket_id))
            fields = w.fields
            w.fields_done = bool(fields) and all(getattr(current, k) == v for k, v in fields.items())
            if w.change.note is not None and (record.note_pending or (w.fields_done and self.adapter.note_in_update)):
                w.note_on_ticket = None  # it may have been sent: look for it, whatever happened to the ticket since
                marker = note_marker(record.id)
                w.note_on_ticket = await self._call("find_note", self.adapter.find_note(ticket_id, marker))
            if w.note_on_ticket is True:  # the note follows the fields: the whole write had been done
                reason = "the ticket shows the planned values and the note" if w.fields_done else "the note is on the ticket"
                w.fields_done = bool(fields)
                self._finish(_Outcome(ticket_id, final, f"reconciled: {reason}", None, w.applied(), labels), result)
                return
            if not w.fields_done:
                partially_written = any(getattr(current, k) == v for k, v in fields.items())
                reason = self._changed_reason(record.original, current, allowed=fields if partially_written else None)
                if reason is not None:
                    self._finish(_Outcome(ticket_id, "changed", f"reconciled: changed by someone else: {reason}",
                                          labels=labels), result)
                    return
            shown = w.fields_done
            await self._complete(w)
        except NotFoundError:
            self._finish(_Outcome(ticket_id, "changed", "reconciled: ticket no longer exists", labels=labels), result)
            return
        except (TransientError, AuthenticationError) as exc:
            raise PollAborted(exc) from exc
        except PermanentError as exc:
            self._finish(self._refused(w, exc, final, "reconciliation", labels), result)
            return
        if shown:
            reason = "reconciled: the ticket shows the planned values" + ("; the note was written after restart"
                                                                          if w.change.note is not None else "")
        else:
            reason = "reconciled: write finished after restart"
        self._finish(_Outcome(ticket_id, final, reason, None, w.applied(), labels), result)
