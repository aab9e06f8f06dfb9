"""Run the sandbox helpdesk: in the foreground (the CLI) or in a background thread (tests, benchmarks).

    from connector.sandbox import running_sandbox

    with running_sandbox(tmp_path, token="s3cret") as sandbox:
        httpx.get(f"{sandbox}/api/tickets")          # the handle is the base URL (a str)
        sandbox.db.create_ticket("Printer jam", "…")  # and plays the human agent
        sandbox.faults.add(path="/api/tickets$", status=500)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from connector.sandbox.app import FaultInjector, create_app
from connector.sandbox.db import SandboxDB

log = logging.getLogger(__name__)


class SandboxHandle(str):
    """The base URL of a running sandbox (``http://127.0.0.1:PORT``), with its DB and fault injector.

    Being a ``str`` it can be used wherever a URL is expected; ``api`` is the
    URL of the REST API (``…/api``), the ``base_url`` to configure an adapter with.
    """

    db: SandboxDB
    faults: FaultInjector | RemoteFaults
    token: str | None

    def __new__(
        cls, url: str, db: SandboxDB, faults: FaultInjector | RemoteFaults, token: str | None
    ) -> SandboxHandle:
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


class RemoteFaults:
    """The fault injector of a sandbox served by another process (over ``/_sandbox/faults``)."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/_sandbox/faults"

    def add(self, **kwargs: Any) -> None:
        httpx.post(self.url, json=kwargs, timeout=10).raise_for_status()

    def clear(self) -> None:
        httpx.delete(self.url, timeout=10).raise_for_status()

    @property
    def hits(self) -> int:
        return int(httpx.get(self.url, timeout=10).json()["hits"])


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
    reset: bool = False,
    queues: Sequence[str] | None = None,
    priorities: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    process: bool = False,
) -> Iterator[SandboxHandle]:
    """Serve a sandbox on a free port of 127.0.0.1; yields its :class:`SandboxHandle`.

    ``path``: a directory (``sandbox.db`` inside), a DB file, or ``None`` for an
    in-memory DB; an existing file is reused unless ``reset``.  The server stops
    and the DB closes when the block ends.

    By default the server runs in a background thread of this process.  With
    ``process=True`` it runs in a child process (a DB file is then required):
    nothing shares this process's GIL, as benchmarks need; ``handle.db`` is a
    second connection to the same file and ``handle.faults`` goes over HTTP.
    """
    db = open_db(path, reset=reset)
    if queues is not None:
        db.set_queues(queues)
    if priorities is not None:
        db.set_priorities(priorities)
    if seed is not None:
        db.seed_csv(seed, as_new=seed_as_new)
    if process:
        if db.path == ":memory:":
            db.close()
            raise ValueError("running_sandbox(process=True) needs a DB file or directory, not None")
        try:
            with _child_server(db.path, host=host, port=port, token=token, log_level=log_level) as url:
                yield SandboxHandle(url, db, RemoteFaults(url), token)
        finally:
            db.close()
        return
    faults = FaultInjector()
    try:
        with _thread_server(create_app(db, token=token, faults=faults), host=host, port=port, log_level=log_level) as url:
            yield SandboxHandle(url, db, faults, token)
    finally:
        db.close()


@contextmanager
def _thread_server(app: FastAPI, *, host: str, port: int, log_level: str) -> Iterator[str]:
    """Serve ``app`` from a background thread of this process; yields its base URL."""
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
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def _child_server(db_path: str, *, host: str, port: int, token: str | None, log_level: str) -> Iterator[str]:
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    env = dict(os.environ)
    env.pop(_TOKEN_ENV, None)
    if token:
        env[_TOKEN_ENV] = token
    child = subprocess.Popen(
        [sys.executable, "-m", "connector.sandbox", "--db", db_path, "--fd", str(sock.fileno()),
         "--log-level", log_level],
        pass_fds=[sock.fileno()],
        env=env,
    )  # fmt: skip
    sock.close()  # the child has its own copy
    try:
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the sandbox process exited with status {child.returncode}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox process did not answer within 60 s")
            time.sleep(0.05)
        yield url
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


_TOKEN_ENV = "HELPDESK_SANDBOX_TOKEN"


def _main(argv: Sequence[str] | None = None) -> None:
    """Serve on an inherited socket (the child side of ``running_sandbox(process=True)``)."""
    parser = argparse.ArgumentParser(description="sandbox helpdesk on an inherited socket")
    parser.add_argument("--db", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    db = SandboxDB(args.db)
    app = create_app(db, token=os.environ.pop(_TOKEN_ENV, None) or None)
    # socket(fileno=...) detects family and protocol (IPPROTO_TCP), so asyncio sets TCP_NODELAY;
    # uvicorn's own ``fd`` option would take it for a Unix socket and leave Nagle on
    sock = socket.socket(fileno=args.fd)
    uvicorn.Server(_uvicorn_config(app, args.log_level)).run(sockets=[sock])


def serve(
    db: SandboxDB,
    *,
    host: str = "127.0.0.1",
    port: int = 8099,
    token: str | None = None,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Serve the sandbox in the foreground until interrupted (Ctrl-C / SIGTERM).

    ``sock``: an already bound socket (see :func:`bind`); else ``host``:``port`` is bound here.
    """
    app = create_app(db, token=token)
    sock = sock or bind(host, port)
    uvicorn.Server(_uvicorn_config(app, log_level)).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; OSError (e.g. the port is in use) is raised here, before anything is served."""
    return _bind(host, port)
