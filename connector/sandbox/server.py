"""Run the sandbox helpdesk: in the foreground (the CLI) or in a background thread (tests, benchmarks).

    from connector.sandbox import running_sandbox

    with running_sandbox(tmp_path, token="s3cret") as sandbox:
        httpx.get(f"{sandbox}/api/tickets")          # the handle is the base URL (a str)
        sandbox.db.create_ticket("Printer jam", "…")  # and plays the human agent
        sandbox.faults.add(path="/api/tickets$", status=500)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from connector.sandbox.app import FaultInjector, create_app
from connector.sandbox.db import SandboxDB

log = logging.getLogger(__name__)


class SandboxHandle(str):
    """The base URL of a running sandbox (``http://127.0.0.1:PORT``), with its DB and fault injector.

    Being a ``str`` it can be used wherever a URL is expected; ``api`` is the
    URL of the REST API (``…/api``), the ``base_url`` to configure an adapter with.
    """

    db: SandboxDB
    faults: FaultInjector
    token: str | None

    def __new__(cls, url: str, db: SandboxDB, faults: FaultInjector, token: str | None) -> SandboxHandle:
        self = super().__new__(cls, url)
        self.db = db
        self.faults = faults
        self.token = token
        return self

    @property
    def url(self) -> str:
        return str.__str__(self)

    @property
    def api(self) -> str:
        return f"{self.url}/api"


def _bind(host: str, port: int) -> socket.socket:
    # proto IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on accepted connections,
    # without which every response waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: object, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level=log_level,
        access_log=False,
        lifespan="off",
        http="h11",
        loop="asyncio",
        timeout_keep_alive=30,
    )


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a background thread cannot own signals
        pass


def open_db(path: str | Path | None, *, reset: bool = False) -> SandboxDB:
    """The sandbox DB at ``path``: a directory gets ``sandbox.db`` inside, ``None`` means in memory."""
    if path is None:
        return SandboxDB(":memory:")
    path = Path(path)
    if path.is_dir():
        path = path / "sandbox.db"
    return SandboxDB(path, reset=reset)


@contextmanager
def running_sandbox(
    path: str | Path | None = None,
    *,
    token: str | None = None,
    seed: str | Path | None = None,
    seed_as_new: bool = False,
    queues: Sequence[str] | None = None,
    priorities: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
) -> Iterator[SandboxHandle]:
    """Serve a sandbox in a background thread on a free port; yields its :class:`SandboxHandle`.

    ``path``: a directory (``sandbox.db`` inside), a DB file, or ``None`` for an
    in-memory DB.  The server stops and the DB closes when the block ends.
    """
    db = open_db(path)
    if queues is not None:
        db.set_queues(queues)
    if priorities is not None:
        db.set_priorities(priorities)
    if seed is not None:
        db.seed_csv(seed, as_new=seed_as_new)
    faults = FaultInjector()
    app = create_app(db, token=token, faults=faults)
    sock = _bind(host, port)
    server = _ThreadServer(_uvicorn_config(app, log_level))
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="sandbox-helpdesk", daemon=True
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the sandbox server failed to start")
            threading.Event().wait(0.01)
        actual_port = sock.getsockname()[1]
        yield SandboxHandle(f"http://{host}:{actual_port}", db, faults, token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        db.close()


def serve(
    db: SandboxDB,
    *,
    host: str = "127.0.0.1",
    port: int = 8099,
    token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve the sandbox in the foreground until interrupted (Ctrl-C / SIGTERM)."""
    app = create_app(db, token=token)
    config = _uvicorn_config(app, log_level)
    config.host, config.port = host, port
    uvicorn.Server(config).run()
