"""Micro-batching: concurrent classify calls share forward passes; errors and swaps are handled per pass."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from connector.api.batching import MicroBatcher
from connector.model.classifier import ClassifierHolder, FieldPrediction, LabelScore, ModelLoadError, Prediction


class FakeClassifier:
    """Labels each text with its own content, records the size of every forward pass."""

    def __init__(self, version: str = "fake-1", delay: float = 0.0, fail: bool = False) -> None:
        self._version = version
        self.delay = delay
        self.fail = fail
        self.passes: list[int] = []
        self.warmed_up = False
        self.threads: set[str] = set()

    @property
    def fields(self) -> tuple[str, ...]:
        return ("queue",)

    @property
    def version(self) -> str:
        return self._version

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        if list(texts) == ["warm-up"]:  # MicroBatcher.start warms the worker thread up
            self.warmed_up = True
        else:
            self.passes.append(len(texts))
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("forward pass failed")
        out = []
        for text in texts:
            score = LabelScore(text, 1.0)
            out.append(Prediction({"queue": FieldPrediction(text, 1.0, (score,))}, self._version))
        return out


async def _gather(batcher: MicroBatcher, groups: list[list[str]]) -> list[list[Prediction]]:
    return await asyncio.gather(*(batcher.classify(g) for g in groups))


def _classify_concurrently(fake: FakeClassifier, groups: list[list[str]], **options: Any) -> list[list[Prediction]]:
    """Each group sent at once by its own caller through a started batcher (``options``: the batcher's), stopped after."""

    async def main() -> list[list[Prediction]]:
        batcher = MicroBatcher(ClassifierHolder(fake), **options)
        await batcher.start()
        try:
            return await _gather(batcher, groups)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_one_forward_pass() -> None:
    fake = FakeClassifier()
    results = _classify_concurrently(fake, [[f"t{i}"] for i in range(20)], wait_ms=50, max_texts=64)
    # every caller gets its own prediction back, in order
    assert [r[0].fields["queue"].label for r in results] == [f"t{i}" for i in range(20)]
    assert fake.passes == [20]
    assert fake.warmed_up
    assert all(name.startswith("classify") for name in fake.threads)  # a worker thread, not the event loop


def test_batching_off_runs_one_pass_per_request() -> None:
    fake = FakeClassifier()
    _classify_concurrently(fake, [[f"t{i}"] for i in range(5)], enabled=False)
    assert sorted(fake.passes) == [1, 1, 1, 1, 1]


def test_max_texts_splits_passes_and_keeps_big_requests_whole() -> None:
    fake = FakeClassifier()
    results = _classify_concurrently(fake, [["a"], ["b"], ["c", "d", "e", "f", "g", "h"], ["i"], ["j"], ["k"]], wait_ms=50, max_texts=4)
    assert [[p.fields["queue"].label for p in r] for r in results] == [
        ["a"], ["b"], ["c", "d", "e", "f", "g", "h"], ["i"], ["j"], ["k"]
    ]
    assert sum(fake.passes) == 11
    assert 6 in fake.passes  # the big request had a pass of its own
    assert all(n <= 4 for n in fake.passes if n != 6)


@pytest.mark.parametrize(("wait_ms", "arriving"), [(0, 10), (50, 3)])
def test_requests_arriving_during_a_pass_share_the_next_one(wait_ms: int, arriving: int) -> None:
    """With or without a wait for company, callers arriving while a pass runs go together in the next one."""
    fake = FakeClassifier(delay=0.15)

    async def main() -> None:
        batcher = MicroBatcher(ClassifierHolder(fake), wait_ms=wait_ms, max_texts=64)
        await batcher.start()
        first = asyncio.create_task(batcher.classify(["first"]))
        await asyncio.sleep(0.04)  # the first pass is running
        await _gather(batcher, [[f"t{i}"] for i in range(arriving)])
        await first
        await batcher.stop()

    asyncio.run(main())
    assert fake.passes == [1, arriving]


def test_a_failing_pass_fails_its_callers_only() -> None:
    fake = FakeClassifier(fail=True)
    holder = ClassifierHolder(fake)

    async def main() -> tuple[list[object], list[Prediction]]:
        batcher = MicroBatcher(holder, wait_ms=20)
        await batcher.start()
        try:
            failed = await asyncio.gather(*(batcher.classify([f"t{i}"]) for i in range(3)), return_exceptions=True)
            holder.swap(FakeClassifier("fake-2"))
            ok = await batcher.classify(["after"])
            return failed, ok
        finally:
            await batcher.stop()

    failed, ok = asyncio.run(main())
    assert all(isinstance(f, RuntimeError) for f in failed)
    assert ok[0].model_version == "fake-2"


def test_swap_during_a_pass_keeps_the_pass_on_its_model() -> None:
    old = FakeClassifier("old", delay=0.2)
    holder = ClassifierHolder(old)

    async def main() -> tuple[list[Prediction], list[Prediction]]:
        batcher = MicroBatcher(holder, wait_ms=0)
        await batcher.start()
        try:
            in_flight = asyncio.create_task(batcher.classify(["x"]))
            await asyncio.sleep(0.05)
            holder.swap(FakeClassifier("new"))
            later = await batcher.classify(["y"])
            return await in_flight, later
        finally:
            await batcher.stop()

    first, later = asyncio.run(main())
    assert first[0].model_version == "old"
    assert later[0].model_version == "new"


def test_no_model_raises_model_load_error() -> None:
    async def main() -> None:
        batcher = MicroBatcher(ClassifierHolder(), wait_ms=1)
        await batcher.start()
        try:
            await batcher.classify(["x"])
        finally:
            await batcher.stop()

    with pytest.raises(ModelLoadError):
        asyncio.run(main())


def test_observer_sees_every_pass() -> None:
    seen: list[int] = []
    fake = FakeClassifier()
    _classify_concurrently(fake, [["a"], ["b"], ["c"]], wait_ms=30, observer=lambda n, _s: seen.append(n))
    assert seen == fake.passes == [3]


def test_stop_fails_waiting_callers() -> None:
    fake = FakeClassifier(delay=0.3)

    async def main() -> list[object]:
        batcher = MicroBatcher(ClassifierHolder(fake), wait_ms=0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.classify([f"t{i}"])) for i in range(3)]
        await asyncio.sleep(0.05)
        await batcher.stop()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_a_pass_hands_the_classifier_every_text_in_order() -> None:
    fake = FakeClassifier(delay=0.05)

    async def main() -> list[list[str]]:
        batcher = MicroBatcher(ClassifierHolder(fake), wait_ms=50, max_texts=64)
        await batcher.start()
        answers = await _gather(batcher, [["x" * 4000, "short"], ["medium " * 40], ["a"]])
        await batcher.stop()
        return [[p.fields["queue"].label for p in answer] for answer in answers]

    labels = asyncio.run(main())
    assert labels == [["x" * 4000, "short"], ["medium " * 40], ["a"]]
    # the classifier (which cuts a pass into length-sorted batches itself) saw them in one call
    assert fake.passes == [4]


def test_a_lone_request_does_not_wait_for_company() -> None:
    fake = FakeClassifier()

    async def main() -> list[float]:
        batcher = MicroBatcher(ClassifierHolder(fake), wait_ms=300)
        await batcher.start()
        took = []
        for text in ("one", "two", "three"):  # one client: each request alone
            started = time.perf_counter()
            await batcher.classify([text])
            took.append(time.perf_counter() - started)
        await batcher.stop()
        return took

    assert max(asyncio.run(main())) < 0.2  # never the 300 ms wait


def test_workers_run_passes_concurrently() -> None:
    fake = FakeClassifier(delay=0.3)

    async def main() -> float:
        batcher = MicroBatcher(ClassifierHolder(fake), wait_ms=0, max_texts=2, workers=2)
        await batcher.start()
        started = time.perf_counter()
        await _gather(batcher, [["a", "b"], ["c", "d"]])
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    elapsed = asyncio.run(main())
    assert fake.passes == [2, 2]
    assert elapsed < 0.55  # two passes of 0.3 s side by side
    assert len(fake.threads) == 2


def test_a_backlog_is_shared_out_among_idle_workers() -> None:
    fake = FakeClassifier(delay=0.1)

    async def main() -> None:
        batcher = MicroBatcher(ClassifierHolder(fake), wait_ms=20, max_texts=64, workers=2)
        await batcher.start()
        await _gather(batcher, [["a"], ["b"], ["c"], ["d"]])
        await batcher.stop()

    asyncio.run(main())
    assert sorted(fake.passes) == [2, 2]  # not one pass of 4 with the second worker idle
