"""The daemon: adapters, store, model and scheduler of one installation, wired together.

``Daemon(config).run()`` polls every enabled system on its interval until
SIGTERM/SIGINT; ``Daemon(config).run_once()`` polls each system once.  On
shutdown the polls in flight stop taking new tickets and get
``daemon.shutdown_timeout`` seconds to finish what they started; after that
they are cancelled: claims whose write had not started are released, the rest
are reconciled at the next start.

Other areas hook into a running daemon through :data:`JOB_PROVIDERS`
(modules with ``register_jobs(daemon)``) and then :meth:`Daemon.add_job`
(periodic jobs, e.g. the export cron) or :meth:`Daemon.add_task` (long-running
coroutines, e.g. the REST API server).

While it runs the daemon holds a lease on its ``instance_id`` in the store
(:mod:`connector.store.leases`), renewed every ``daemon.heartbeat_interval``
seconds and released on a clean stop; a second daemon under a live id is
refused (:class:`~connector.store.leases.LeaseHeld`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from adapters.registry import build_adapter as build_system_adapter
from adapters.base import Adapter, EndpointNotFoundError
from connector.config import AppConfig
from connector.model.classifier import ClassifierHolder, ModelLoadError
from connector.model.serving import ModelReloader, publish_active_models
from connector.pipeline import Pipeline, PollResult
from connector.scheduler import Scheduler, SystemHealth
from connector.store.db import Store, redact_url
from connector.store.decisions import DecisionStore
from connector.store.leases import LeaseHeld, LeaseStore, new_instance_id

log = logging.getLogger(__name__)

#: "module:function" entries called as ``function(daemon)`` at start; later areas add theirs here
JOB_PROVIDERS: tuple[str, ...] = (
    "connector.learning.jobs:register_jobs",
    "connector.api.daemon_hook:register_jobs",
)

#: how often the daemon looks for newly activated models
MODEL_CHECK_SECONDS = 30.0


def build_adapter(config: AppConfig, name: str) -> Adapter:
    """The adapter of system ``name`` (kept for callers; the factory is :func:`adapters.registry.build_adapter`)."""
    return build_system_adapter(name, config.systems[name])


class Daemon:
    """Everything one ``run`` needs; tests pass their own store, classifier holder or adapters."""

    def __init__(
        self,
        config: AppConfig,
        *,
        store: Store | None = None,
        holder: ClassifierHolder | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        model_check_seconds: float = MODEL_CHECK_SECONDS,
    ) -> None:
        self.config = config
        self.store = store
        self._own_store = store is None
        self.holder = holder or ClassifierHolder()
        self._given_holder = holder is not None
        self.adapters: dict[str, Adapter] = dict(adapters or {})
        self.model_check_seconds = model_check_seconds
        self.instance_id = config.daemon.instance_id or new_instance_id()
        self.lease: LeaseStore | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.stop_event = asyncio.Event()
        self.scheduler = Scheduler()
        self.pipelines: dict[str, Pipeline] = {}
        self.health: dict[str, SystemHealth] = {}
        self.reloader: ModelReloader | None = None
        self.decisions: DecisionStore | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._task_factories: list[Callable[[], Awaitable[Any]]] = []
        self._started = False

    # ------------------------------------------------------------------ set-up

    @property
    def systems(self) -> list[str]:
        return [name for name, s in self.config.systems.items() if s.enabled]

    async def setup(self) -> None:
        """Open the store (migrations), load the active models, build adapters and pipelines."""
        if self._started:
            return
        if self.store is None:
            log.info("state store %s", redact_url(self.config.store_url))
            self.store = await asyncio.to_thread(Store, self.config.store_url)
        await self._take_lease()
        self.decisions = DecisionStore(self.store, self.instance_id)
        if not self.holder.loaded:
            self.reloader = ModelReloader(self.config, self.store, self.holder)
            try:
                await asyncio.to_thread(self.reloader.load_initial)
            except ModelLoadError as exc:
                log.error("no model loaded: %s; polls fail until a model is activated", exc)
        elif not self._given_holder:
            self.reloader = ModelReloader(self.config, self.store, self.holder)
        publish_active_models(self.holder)
        for name in self.systems:
            system = self.config.systems[name]
            if name not in self.adapters:
                self.adapters[name] = build_adapter(self.config, name)
            self.pipelines[name] = Pipeline(
                name,
                system,
                self.adapters[name],
                self.decisions,
                self.holder,
                claim_timeout=self.config.daemon.claim_timeout,
                stop_event=self.stop_event,
            )
            self.health[name] = SystemHealth(name, system.poll_interval)
        self._started = True
        log.info(
            "instance %s routing %s",
            self.instance_id,
            ", ".join(f"{n} ({self.config.systems[n].type}, {self.config.systems[n].mode})" for n in self.systems)
            or "no system",
        )

    async def _take_lease(self) -> None:
        """Hold this daemon's identity in the store and start the heartbeat; LeaseHeld when it is in use."""
        assert self.store is not None
        lease = LeaseStore(self.store, self.instance_id, self.config.daemon.lease_ttl)
        try:
            await asyncio.to_thread(lease.acquire)
        except LeaseHeld:
            if self._own_store:
                self.store.dispose()
                self.store = None
            raise
        self.lease = lease
        self._heartbeat = asyncio.create_task(self._beat(lease), name=f"lease-heartbeat:{self.instance_id}")

    async def _beat(self, lease: LeaseStore) -> None:
        """Renew the lease every heartbeat_interval; stop the daemon if another one took it over."""
        failing = False
        while True:
            await asyncio.sleep(self.config.daemon.heartbeat_interval)
            try:
                renewed = await asyncio.to_thread(lease.renew)
            except Exception as exc:  # the store is down: keep trying; the lease lapses after lease_ttl
                if not failing:
                    log.error("instance %s: renewing the lease failed (%s); retrying", self.instance_id,
                              exc.__class__.__name__)
                failing = True
                continue
            if failing:
                log.info("instance %s: lease renewed again", self.instance_id)
                failing = False
            if not renewed:
                log.error("instance %s: the lease was taken over by another daemon; stopping", self.instance_id)
                self.request_stop()
                return

    async def _release_lease(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self.lease is not None:
            try:
                await asyncio.to_thread(self.lease.release)
            except Exception as exc:  # the lease then expires after lease_ttl
                log.warning("instance %s: releasing the lease failed (%s)", self.instance_id, exc.__class__.__name__)
            self.lease = None


    # ------------------------------------------------------------------ hooks for other areas

    def add_job(self, func: Callable[..., Any], trigger: BaseTrigger, *, id: str, **kwargs: Any) -> str:  # noqa: A002
        """Add a periodic job to the daemon's scheduler (see :meth:`Scheduler.add_job`)."""
        return self.scheduler.add_job(func, trigger, id=id, **kwargs)

    def add_task(self, factory: Callable[[], Awaitable[Any]]) -> None:
        """Run ``factory()`` as a background task while the daemon runs; it is cancelled at shutdown."""
        self._task_factories.append(factory)

    def _load_providers(self) -> None:
        for entry in JOB_PROVIDERS:
            module_name, _, func_name = entry.partition(":")
            getattr(importlib.import_module(module_name), func_name)(self)

    # ------------------------------------------------------------------ polling

    async def poll_system(self, name: str, *, force: bool = False) -> PollResult | None:
        """One poll of ``name`` (skipped while it backs off after failures, unless ``force``)."""
        health = self.health[name]
        if self.stop_event.is_set() or (not force and not health.due()):
            return None
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            result = await self.pipelines[name].poll()
        finally:
            if task is not None:
                self._running.discard(task)
        # a first poll that finds no API at the configured address: a configuration error, not an outage
        unreachable = isinstance(result.error, EndpointNotFoundError) and not health.ever_ok
        delay = health.update(result, retrying=not force and not unreachable)
        if unreachable:
            self._stop_polling(name)
            return result
        if result.error is None and (result.new or result.reconciled):
            log.info("%s: poll done in %.1f s: %s", name, result.seconds, result.summary())
        else:
            log.debug("%s: poll done in %.1f s: %s", name, result.seconds, result.summary())
        if delay is not None and not self.stop_event.is_set():
            self.scheduler.retry_in(f"poll:{name}", delay)
        return result

    def _stop_polling(self, name: str) -> None:
        """Poll ``name`` no more: its configured address leads to no API (see EndpointNotFoundError)."""
        self.health[name].stopped = True
        self.scheduler.remove(f"poll:{name}")
        log.error("%s: not polled any more; fix systems.%s.connection (check-config --online tells) and restart",
                  name, name)

    async def check_models(self) -> None:
        if self.reloader is not None:
            await asyncio.to_thread(self.reloader.check)  # publishes the versions it swaps in

    # ------------------------------------------------------------------ run

    async def run_once(self) -> dict[str, PollResult]:
        """Poll every enabled system once, concurrently, then close."""
        await self.setup()
        try:
            results = await asyncio.gather(*(self.poll_system(n, force=True) for n in self.systems))
            return {n: r for n, r in zip(self.systems, results, strict=True) if r is not None}
        finally:
            await self.close()

    def request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("shutdown requested; finishing the batch in flight (at most %.0f s)",
                     self.config.daemon.shutdown_timeout)
            self.stop_event.set()

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
                pass
        return installed

    async def run(self) -> None:
        """Poll on schedule until :meth:`request_stop` (SIGTERM/SIGINT), then shut down cleanly."""
        await self.setup()
        installed = self._install_signal_handlers()
        try:
            for name in self.systems:
                self.scheduler.add_system(name, self.config.systems[name].poll_interval, self.poll_system)
            if self.reloader is not None:
                self.scheduler.add_job(
                    self.check_models, IntervalTrigger(seconds=self.model_check_seconds), id="model-reload"
                )
            self._load_providers()
            self.scheduler.start()
            self._tasks = [asyncio.create_task(factory()) for factory in self._task_factories]
            await self.stop_event.wait()
        finally:
            await self.shutdown()
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def shutdown(self) -> None:
        """Stop scheduling, let polls in flight finish within the timeout, cancel the rest, close."""
        self.stop_event.set()
        # pause, do not shut down yet: APScheduler's shutdown cancels the coroutine jobs still running
        self.scheduler.pause()
        running = {t for t in self._running if not t.done()}
        if running:
            done, pending = await asyncio.wait(running, timeout=self.config.daemon.shutdown_timeout)
            if pending:
                log.warning("abandoning %d poll(s) still running after %.0f s", len(pending),
                            self.config.daemon.shutdown_timeout)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        self.scheduler.shutdown()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.close()
        log.info("stopped")

    async def close(self) -> None:
        for name, adapter in self.adapters.items():
            try:
                await adapter.aclose()
            except Exception as exc:  # closing must not hide the real outcome
                log.debug("%s: closing the adapter failed: %s", name, exc)
        await self._release_lease()
        if self._own_store and self.store is not None:
            self.store.dispose()


def run_daemon(config: AppConfig, *, once: bool = False) -> int:
    """Entry point of ``helpdesk-connector run``; returns the process exit code."""

    async def main() -> int:
        daemon = Daemon(config)
        if once:
            results = await daemon.run_once()
            failed = [name for name, r in results.items() if r.error is not None]
            for name, result in results.items():
                state = f"failed: {result.error}" if result.error is not None else "ok"
                log.info("%s: %s (%s)", name, state, result.summary())
            return 1 if failed else 0
        await daemon.run()
        return 0

    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(main())
    except LeaseHeld as exc:
        log.error("%s", exc)
        return 1
    except SQLAlchemyError as exc:
        log.error("the state store %s cannot be used: %s", redact_url(config.store_url), exc.__class__.__name__,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        log.error("%s", str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
        return 1
