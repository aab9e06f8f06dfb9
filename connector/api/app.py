"""The FastAPI application: ``create_app(config, store, holder)``.

The app needs the configuration, the store and a
:class:`~connector.model.classifier.ClassifierHolder`.  Standalone
(``helpdesk-connector serve``) it loads the active models itself and checks
the registry for newly activated ones; inside the daemon (``run`` with
``api.enabled``) the daemon passes its own holder and reloader, so both serve
the same model.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from connector.api.auth import AuthenticationMiddleware, TokenVerifier
from connector.api.batching import MicroBatcher
from connector.api.errors import install_error_handlers
from connector.api.jobs import TrainingJobRunner
from connector.api.metrics import observe_forward_pass
from connector.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from connector.api.settings import ApiSettings
from connector.config import AppConfig
from connector.model.classifier import ClassifierHolder, ModelLoadError
from connector.model.serving import ModelReloader, publish_active_models
from connector.model.threads import micro_batch_workers
from connector.store.db import Store

log = logging.getLogger(__name__)


def _product_version() -> str:
    try:
        return importlib.metadata.version("helpdesk-connector")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


API_PREFIX = "/api/v1"


@dataclass
class ApiContext:
    """Everything a request handler needs, kept on ``app.state.ctx``."""

    config: AppConfig
    store: Store
    holder: ClassifierHolder
    reloader: ModelReloader
    batcher: MicroBatcher
    jobs: TrainingJobRunner

    async def reload_models(self) -> bool:
        """Swap in newly activated models now (in a thread: loading takes a while)."""
        return await asyncio.to_thread(self.reloader.check)  # publishes the versions it swaps in


def _context(
    config: AppConfig,
    store: Store,
    holder: ClassifierHolder,
    reloader: ModelReloader | None,
    micro_batching: bool | None,
) -> ApiContext:
    """The request handlers' context: the models, the micro-batcher and the training jobs."""
    reloader = reloader if reloader is not None else ModelReloader(config, store, holder)
    settings = config.api
    batcher = MicroBatcher(
        holder,
        enabled=settings.micro_batching if micro_batching is None else micro_batching,
        wait_ms=settings.micro_batch_wait_ms,
        max_texts=settings.micro_batch_max,
        workers=micro_batch_workers(config),
        observer=observe_forward_pass,
    )
    jobs = TrainingJobRunner(config, store, on_finished=None)
    return ApiContext(config, store, holder, reloader, batcher, jobs)


def _lifespan(
    ctx: ApiContext, *, load_models: bool, reload_interval: float | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start: load the models (``load_models``), start the batcher, recover jobs, watch the registry; stop them."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_models and not ctx.holder.loaded:
            try:
                await asyncio.to_thread(ctx.reloader.load_initial)
            except ModelLoadError as exc:
                log.warning("API starts without a model (classify answers 503 until one is active): %s", exc)
        publish_active_models(ctx.holder)
        await ctx.batcher.start()
        ctx.jobs.on_finished = ctx.reload_models
        ctx.jobs.recover_stale()
        watcher = asyncio.create_task(_watch_models(ctx, reload_interval)) if reload_interval else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await ctx.batcher.stop()
            await ctx.jobs.shutdown()

    return lifespan


def _mount(app: FastAPI, settings: ApiSettings) -> None:
    """The routers, the error answers, and the middleware (authentication before the body limit)."""
    verifier = TokenVerifier(settings.tokens)
    app.state.verifier = verifier
    install_error_handlers(app)

    from connector.api import routes_admin, routes_classify, routes_health

    app.include_router(routes_health.router)
    app.include_router(routes_classify.router, prefix=API_PREFIX)
    app.include_router(routes_admin.router, prefix=API_PREFIX)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # outside the body limit: an unauthenticated request is answered before any of its body is read
    app.add_middleware(AuthenticationMiddleware, verifier=verifier, prefixes=(API_PREFIX,))
    app.add_middleware(MetricsMiddleware, prefixes=(API_PREFIX,))


def create_app(
    config: AppConfig,
    store: Store,
    holder: ClassifierHolder | None = None,
    *,
    reloader: ModelReloader | None = None,
    micro_batching: bool | None = None,
    load_models: bool | None = None,
    reload_interval: float | None = 30.0,
) -> FastAPI:
    """Build the API application.

    ``holder``/``reloader``: pass the daemon's to share its models; by default
    the app makes its own, loads the active models at start (``load_models``,
    default: when it made its own holder) and re-checks the registry every
    ``reload_interval`` seconds (None: never; the daemon's reloader already does).
    ``micro_batching`` overrides ``api.micro_batching`` (whether classify requests
    share forward passes).
    """
    own_holder = holder is None
    ctx = _context(config, store, holder if holder is not None else ClassifierHolder(), reloader, micro_batching)
    app = FastAPI(
        title="helpdesk-connector API",
        version=_product_version(),
        description=(
            "Classify helpdesk tickets with the local model, upload training data, train and manage model "
            "versions. The classic calls (train-data, train, classify) keep the request and answer shapes of "
            "the ATC on-premise API."
        ),
        lifespan=_lifespan(ctx, load_models=own_holder if load_models is None else load_models,
                           reload_interval=reload_interval),
    )
    app.state.ctx = ctx
    _mount(app, config.api)
    return app


async def _watch_models(ctx: ApiContext, interval: float) -> None:
    """Pick up models activated elsewhere (CLI, learning loop) without a restart."""
    while True:
        await asyncio.sleep(interval)
        try:
            await ctx.reload_models()
        except Exception:
            log.exception("model check failed")
