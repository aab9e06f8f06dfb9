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

Writing (:class:`connector.writer.TicketWriter`): the fields, with the note
in the same request where the system takes both; elsewhere the note follows
after the store has recorded it as pending; a note is written once, never
twice.  Reconciliation is :mod:`connector.reconcile`.  The outcomes of a
page are gathered in a :class:`connector.writer.PageRun` and stored together.

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

from adapters.base import (
    Adapter,
    AdapterError,
    AuthenticationError,
    NotFoundError,
    PermanentError,
    Ticket,
    TransientError,
)
from adapters.http import RetryPolicy
from connector import metrics
from connector.config import SystemConfig
from connector.model.classifier import Classifier, ClassifierHolder, ModelLoadError, Prediction
from connector.reconcile import PollAborted, reconcile
from connector.routing import RoutingDecision, decide
from connector.store.decisions import DecisionStatus, DecisionStore, FinalRecord, NewDecision, Outcome
from connector.text import ticket_text
from connector.writer import LoggedOutcome, PageRun, TicketWriter, WriteState, describe_error

__all__ = ["Pipeline", "PollAborted", "PollResult", "classify_executor", "describe_error", "error_kind", "snapshot"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_classify_executor: ThreadPoolExecutor | None = None


def classify_executor() -> ThreadPoolExecutor:
    """The one worker thread that runs the CPU/GPU-bound classifier for every system."""
    global _classify_executor
    if _classify_executor is None:
        _classify_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
    return _classify_executor


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
class _Final:
    """A decision recorded final right away (dry-run, skipped, failed), with its log line's parts."""

    record: FinalRecord
    prediction: Prediction | None
    detail: str
    level: int = logging.INFO


@dataclass(slots=True)
class _Plan:
    """A ticket to claim and write."""

    ticket: Ticket
    prediction: Prediction
    decision: RoutingDecision
    new: NewDecision


@dataclass(slots=True)
class _Page:
    """A classified, decided and claimed page (built in the worker thread)."""

    predictions: list[Prediction | BaseException] = field(default_factory=list)
    seconds: float = 0.0
    finals: list[_Final] = field(default_factory=list)
    plans: list[_Plan] = field(default_factory=list)
    #: ticket ids this page claimed or recorded, with their decision ids (the others belong to another daemon)
    won: dict[str, int] = field(default_factory=dict)


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
        #: the requests that change a ticket (note_retry: backoff for a note request that failed unclearly)
        self.writer = TicketWriter(name, adapter, decisions, note_retry or RetryPolicy())
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
        return await self.writer.call(operation, awaitable)

    # ------------------------------------------------------------------ poll

    async def poll(self) -> PollResult:
        """One poll; never raises for helpdesk or model errors (they are in ``result.error``)."""
        result = PollResult(self.name)
        started = time.perf_counter()
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
        self._log_finals(page, result)
        mine = [plan for plan in page.plans if plan.new.ticket_id in page.won]
        for plan in page.plans:
            if plan.new.ticket_id not in page.won:
                log.debug("%s: ticket %s is decided by another instance", self.name, plan.new.ticket_id)
        if not mine:
            return True
        await self._drain_settle()
        run = PageRun(result)
        started = await self._write_page(run, mine, page.won)
        if run.abort is not None:
            await self._drain_settle()
            raise PollAborted(run.abort)
        return started

    def _log_finals(self, page: _Page, result: PollResult) -> None:
        """Count and log the page's decisions recorded final right away (those this instance recorded)."""
        for final in page.finals:
            outcome = final.record.outcome
            if outcome.ticket_id in page.won:
                result.outcomes[outcome.status] += 1
                self.writer.log_decision(outcome.ticket_id, _labels(final.prediction), outcome.status, final.detail,
                                         level=final.level)

    async def _write_page(self, run: PageRun, mine: list[_Plan], won: dict[str, int]) -> bool:
        """Write the claimed tickets, at most ``max_concurrent_writes`` at once; False if some never started."""
        semaphore = asyncio.Semaphore(self.system.max_concurrent_writes)
        completed = False
        try:
            outcomes = await asyncio.gather(
                *(self._route(semaphore, plan, won[plan.new.ticket_id], run) for plan in mine),
                return_exceptions=True,  # every ticket task ends before the poll goes on or fails
            )
            completed = True
        finally:
            release = run.to_release | ({plan.new.ticket_id for plan in mine} - run.started)
            if completed:  # record in the background; _drain_settle() waits for it
                self._settle_task = asyncio.create_task(self.writer.settle(run.take_pending(), release))
            else:
                await self.writer.settle(run.take_pending(), release, in_cancellation=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return all(outcomes)

    async def _drain_settle(self) -> None:
        """Wait for the outcomes of the previous page to be stored (raises if that failed)."""
        task, self._settle_task = self._settle_task, None
        if task is not None:
            await task

    async def _classify_and_claim(
        self, classifier: Classifier | None, tickets: Sequence[Ticket], unreadable: Sequence[tuple[Ticket, BaseException]]
    ) -> _Page:
        """In the worker thread: clean, classify, decide and claim the page (one transaction)."""

        def work() -> _Page:
            page = _Page()
            for ticket, exc in unreadable:
                page.finals.append(self._failed(ticket, "cannot read the ticket", exc))
            if tickets:
                assert classifier is not None
                page.predictions, page.seconds = self._predict(classifier, tickets)
            for ticket, prediction in zip(tickets, page.predictions, strict=True):
                if isinstance(prediction, BaseException):
                    page.finals.append(self._failed(ticket, "the classifier failed on this ticket's text", prediction))
                else:
                    self._plan(page, ticket, prediction)
            if page.finals or page.plans:
                page.won = self.decisions.claim_many([plan.new for plan in page.plans], [f.record for f in page.finals])
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

    def _failed(self, ticket: Ticket, reason: str, exc: BaseException) -> _Final:
        """A ticket recorded ``failed`` before any claim (unreadable, or the classifier failed on it)."""
        new = NewDecision(self.name, ticket.id, self.system.mode, original=snapshot(ticket))
        error = describe_error(exc)
        record = FinalRecord(new, Outcome(ticket.id, DecisionStatus.FAILED, reason, error))
        return _Final(record, None, f"error={error!r}", logging.WARNING)

    def _plan(self, page: _Page, ticket: Ticket, prediction: Prediction) -> None:
        """Decide ``ticket``: a write to claim, or a final record (dry-run, skipped)."""
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
            record = FinalRecord(new, Outcome(ticket.id, decision.status, decision.reason_text()))
            page.finals.append(_Final(record, prediction, self._would(decision)))
        else:
            page.plans.append(_Plan(ticket, prediction, decision, new))

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

    async def _route(self, semaphore: asyncio.Semaphore, plan: _Plan, decision_id: int, run: PageRun) -> bool:
        """Re-read, write and record one claimed ticket; False if it was not started."""
        async with semaphore:
            if run.abort is not None or self.stopping:
                return False
            run.started.add(plan.ticket.id)
            await self._write_claimed(plan, decision_id, run)
            return True

    @staticmethod
    def _would(decision: RoutingDecision) -> str:
        if not decision.would_set:
            return f"reason={decision.reason_text()!r}"
        return "would_set=" + ",".join(f"{k}:{v!r}" for k, v in decision.would_set.items())

    async def _write_claimed(self, plan: _Plan, decision_id: int, run: PageRun) -> None:
        decision = plan.decision
        assert decision.change is not None
        ticket_id = plan.ticket.id
        labels = _labels(plan.prediction)
        w = WriteState(ticket_id, decision.change, decision_id)
        try:
            try:
                current = await self._call("get", self.adapter.get_ticket(ticket_id))
            except NotFoundError:
                run.finish(LoggedOutcome(ticket_id, DecisionStatus.CHANGED, "ticket no longer exists", labels=labels))
                return
            reason = self.writer.changed_reason(snapshot(plan.ticket), current)
            if reason is not None:
                run.finish(LoggedOutcome(ticket_id, DecisionStatus.CHANGED, f"changed by someone else: {reason}",
                                         labels=labels))
                return
            await self.writer.complete(w)
        except (TransientError, AuthenticationError) as exc:
            # the system is down or refuses us: the poll stops; what may have reached the ticket is kept
            run.abort = run.abort or exc
            if w.started:
                log.debug("%s: ticket %s: %s during its write; completed by reconciliation at the next poll",
                         self.name, ticket_id, describe_error(exc))
            else:
                run.to_release.add(ticket_id)
                log.debug("%s: ticket %s released after %s", self.name, ticket_id, describe_error(exc))
            return
        except PermanentError as exc:
            run.finish(w.refused(exc, decision.status, decision.reason_text(), labels))
            return
        except asyncio.CancelledError:
            if w.started:
                log.warning("%s: ticket %s abandoned during its write; reconciled at the next poll", self.name, ticket_id)
            else:
                run.to_release.add(ticket_id)
                log.info("%s: ticket %s abandoned before its write", self.name, ticket_id)
            raise
        run.finish(LoggedOutcome(ticket_id, decision.status, decision.reason_text(), None, w.applied(), labels))

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self, result: PollResult | None = None) -> int:
        """Finish claims left by a crash or an outage (:func:`connector.reconcile.reconcile`).  Returns how many."""
        result = result or PollResult(self.name)
        return await reconcile(self.writer, result, self.claim_timeout, lambda: self.stopping)
