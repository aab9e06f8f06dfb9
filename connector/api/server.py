"""Running the API on uvicorn: standalone (``serve``) or inside the daemon's event loop (``run``).

Inside the daemon::

    from connector.api.server import build_server
    server = build_server(config, store, holder=holder, reloader=reloader)
    api_task = asyncio.create_task(server.serve())     # alongside the polling loop
    ...
    server.should_exit = True                           # on shutdown
    await api_task

or simply ``await serve_in_background(config, store, holder, reloader)`` in a
task and cancel that task on shutdown (it stops the server gracefully).

``build_server`` refuses (``InsecureBindError``) a non-loopback ``api.host``
without ``api.tokens``.  The embedded server installs no signal handlers, so
the daemon keeps control of SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from connector.api.app import create_app
from connector.api.auth import check_bind_address
from connector.config import AppConfig
from connector.model.classifier import ClassifierHolder
from connector.model.serving import ModelReloader
from connector.store.db import Store

log = logging.getLogger(__name__)


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None


def build_server(
    config: AppConfig,
    store: Store,
    *,
    holder: ClassifierHolder | None = None,
    reloader: ModelReloader | None = None,
    host: str | None = None,
    port: int | None = None,
    embedded: bool = True,
    micro_batching: bool | None = None,
    reload_interval: float | None = None,
) -> uvicorn.Server:
    """A uvicorn server for the API; ``await server.serve()`` runs it until ``server.should_exit``.

    ``embedded``: leave SIGTERM/SIGINT to the host (the daemon).  ``reload_interval``:
    how often the app re-checks the registry for new active models; default 30 s when
    the app owns its models (no ``holder`` given), never when the daemon passes its own.
    """
    host = host or config.api.host
    port = config.api.port if port is None else port
    check_bind_address(host, config.api.tokens)
    if reload_interval is None and holder is None:
        reload_interval = 30.0
    app = create_app(
        config,
        store,
        holder,
        reloader=reloader,
        micro_batching=micro_batching,
        reload_interval=reload_interval,
    )
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the product's logging set-up
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    server_cls = EmbeddedServer if embedded else uvicorn.Server
    log.info("REST API listening on http://%s:%d (OpenAPI at /docs and /openapi.json)", _show(host), port)
    return server_cls(uv_config)


def _show(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve_in_background(
    config: AppConfig, store: Store, holder: ClassifierHolder, reloader: ModelReloader | None = None
) -> None:
    """Serve the API with the daemon's holder until cancelled (for ``run`` with ``api.enabled``).

    Cancelling the task stops the server gracefully (requests in flight finish,
    a running training job is stopped) before the cancellation propagates.
    """
    server = build_server(config, store, holder=holder, reloader=reloader)
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        raise
