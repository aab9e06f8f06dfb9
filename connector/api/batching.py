"""Micro-batching of concurrent classify requests.

Requests that arrive while the model is busy, or within ``wait_ms`` of each
other, share one forward pass: a collector task takes the first waiting
request, gathers more for at most ``wait_ms`` (or until ``max_texts`` texts),
runs the classifier once in a worker thread, and hands each request its share
of the predictions (the classifier sorts the pass by length and cuts it into
batches that bound padding).  A lone request (no pass running, the last pass served a
single request) goes at once: waiting for company that is not coming would
only add ``wait_ms`` to every request of a single client.  A backlog found
while several workers are idle is shared out among them rather than taken
into one pass.  At most ``workers`` passes run at once (default one), so
the event loop stays free and the CPU or GPU does not thrash between many
concurrent passes.

With batching switched off every request runs its own forward pass in a
thread of the pool (what a plain FastAPI endpoint would do): the baseline of
``bench/api.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio.to_thread

from connector.model.classifier import ClassifierHolder, Prediction

log = logging.getLogger(__name__)

#: called after each forward pass with (number of texts, seconds)
BatchObserver = Callable[[int, float], None]


@dataclass(slots=True)
class _Pending:
    texts: Sequence[str]
    future: asyncio.Future[list[Prediction]]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Classifies texts for many concurrent callers, sharing forward passes."""

    def __init__(
        self,
        holder: ClassifierHolder,
        *,
        enabled: bool = True,
        wait_ms: float = 5.0,
        max_texts: int = 64,
        observer: BatchObserver | None = None,
        workers: int = 1,
    ) -> None:
        self.holder = holder
        self.enabled = enabled
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_texts = max(1, max_texts)
        self.observer = observer
        #: forward passes that may run at once (each in its own worker thread)
        self.workers = max(1, workers)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._carry: _Pending | None = None
        #: passes running now, and how many requests the last pass served (whether to wait for company)
        self._in_flight = 0
        self._last_pass_requests = 0

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        if not self.enabled or self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="classify")
        self._task = asyncio.create_task(self._run(), name="micro-batcher")
        await self.warm_up()

    async def warm_up(self) -> None:
        """One pass in the worker thread, so the first request does not pay for thread-local set-up."""
        if self._executor is None or not self.holder.loaded:
            return
        classifier = self.holder.current
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, classifier.classify, ["warm-up"])
        except Exception as exc:  # a broken model shows up on the first real request
            log.warning("classifier warm-up failed: %s", exc)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._carry is not None and not self._carry.future.done():
            self._carry.future.set_exception(RuntimeError("the API is shutting down"))
        self._carry = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the API is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    # ------------------------------------------------------------------ classify

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Predictions for ``texts`` (raises ModelLoadError when no model is loaded)."""
        if not texts:
            return []
        if not self.enabled or self._queue is None:
            classifier = self.holder.current
            started = time.perf_counter()
            predictions = await anyio.to_thread.run_sync(classifier.classify, list(texts))
            self._observe(len(texts), time.perf_counter() - started)
            return predictions
        self.holder.current  # fail fast (ModelLoadError) before queueing  # noqa: B018
        future: asyncio.Future[list[Prediction]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(texts, future))
        return await future

    def _observe(self, size: int, seconds: float) -> None:
        if self.observer is not None:
            try:
                self.observer(size, seconds)
            except Exception:  # metrics must never break classification
                log.debug("batch observer failed", exc_info=True)

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        if self._carry is not None:
            first, self._carry = self._carry, None
        else:
            first = await queue.get()
        batch = [first]
        count = len(batch[0].texts)
        loop = asyncio.get_running_loop()
        expect_company = self._in_flight > 0 or self._last_pass_requests > 1
        deadline = loop.time() + (self.wait_s if expect_company else 0.0)
        # workers idle beside the one this pass is for: a backlog is shared out among them, not all taken here
        idle_besides = self.workers - self._in_flight - 1
        while count < self.max_texts:
            if idle_besides > 0 and len(batch) * (idle_besides + 1) >= len(batch) + queue.qsize():
                break
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if count + len(item.texts) > self.max_texts:
                self._carry = item  # too big to share this pass: it opens the next one
                break
            batch.append(item)
            count += len(item.texts)
        return batch

    async def _run(self) -> None:
        assert self._queue is not None
        slots = asyncio.Semaphore(self.workers)
        passes: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()  # collect the next pass only when a worker is free
                try:
                    batch = await self._collect(self._queue)
                except BaseException:
                    slots.release()
                    raise
                batch = [p for p in batch if not p.future.done()]  # callers that gave up
                if not batch:
                    slots.release()
                    continue
                self._last_pass_requests = len(batch)
                self._in_flight += 1
                task = asyncio.create_task(self._pass(batch))
                passes.add(task)
                task.add_done_callback(self._pass_done(passes, slots))
        finally:
            for task in passes:
                task.cancel()
            if passes:
                await asyncio.gather(*passes, return_exceptions=True)

    def _pass_done(self, passes: set[asyncio.Task[None]], slots: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            passes.discard(task)
            self._in_flight -= 1
            slots.release()

        return done

    async def _pass(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        texts = [text for pending in batch for text in pending.texts]
        started = time.perf_counter()
        try:
            classifier = self.holder.current  # one model for the whole pass, even across a swap
            predictions = await loop.run_in_executor(self._executor, classifier.classify, texts)
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the API is shutting down"))
            raise
        except Exception as exc:  # handed to every caller of this pass
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self._observe(len(texts), time.perf_counter() - started)
        offset = 0
        for pending in batch:
            share = predictions[offset : offset + len(pending.texts)]
            offset += len(pending.texts)
            if not pending.future.done():
                pending.future.set_result(share)
