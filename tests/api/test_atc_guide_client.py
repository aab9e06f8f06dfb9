"""A client written from the ATC fine-tuning guide works unchanged against a fresh ``serve``.

The guide's REST calls live, verbatim, in ``../shared/atc/guide_client.py`` (beside the repository, never
copied into it).  The client uploads ``tickets_labeled.csv`` (the guide's ``text,label,priority``), trains and
classifies at once, on 127.0.0.1:8080 — the address it is written for.  The server is the real
``helpdesk-connector serve`` in an empty folder: no configuration file, no model; only a tiny base model (by
environment variable) so that training takes seconds.
"""

from __future__ import annotations

import ast
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO
from tests.support.tiny_model import build_tiny_model

GUIDE_PORT = 8080


def _shared_dir() -> Path | None:
    """``../shared`` beside the repository root (or beside the main checkout, for a git worktree)."""
    candidates = [REPO.parent / "shared"]
    git = REPO / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text(encoding="utf-8").split(":", 1)[1].strip())
        candidates.append(gitdir.parents[2].parent / "shared")  # <main>/../shared
    return next((c for c in candidates if (c / "atc" / "guide_client.py").is_file()), None)


def _wait_for_free_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.5)


@pytest.fixture
def atc_files() -> Path:
    shared = _shared_dir()
    if shared is None:
        pytest.skip(f"the ATC guide client is not beside the repository ({REPO.parent / 'shared' / 'atc'} is absent)")
    return shared / "atc"


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    pytest.importorskip("requests", reason="the guide's client uses requests (the test extra installs it)")
    if not _wait_for_free_port(GUIDE_PORT):
        pytest.skip(f"port {GUIDE_PORT}, which the guide's client calls, stayed busy for 30 s")
    base = build_tiny_model(tmp_path / "tiny-base", ["a", "b"], version="base")
    home = tmp_path / "install"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_CONNECTOR_")}
    env.update(
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HELPDESK_CONNECTOR_MODEL__BASE_MODEL=str(base),
        HELPDESK_CONNECTOR_MODEL__DEVICE="cpu",
        HELPDESK_CONNECTOR_TRAINING__EPOCHS="2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "serve"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode("utf-8", "replace")
            try:
                httpx.get(f"http://127.0.0.1:{GUIDE_PORT}/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_guide_client_runs_unchanged_and_gets_a_queue_label(
    atc_files: Path, fresh_server: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    workdir = tmp_path / "client"
    workdir.mkdir()
    shutil.copy(atc_files / "tickets_labeled.csv", workdir / "tickets_labeled.csv")
    with (atc_files / "tickets_labeled.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    queues = {row["label"] for row in rows}
    priorities = {row["priority"] for row in rows}

    result = subprocess.run(
        [sys.executable, str(atc_files / "guide_client.py")],
        cwd=workdir, capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    output = result.stdout.decode("utf-8")
    assert result.returncode == 0, output + result.stderr.decode("utf-8", "replace")
    lines = output.strip().splitlines()
    assert lines[0].endswith(": 201"), output  # uploaded
    assert lines[1].endswith(": 200"), output  # trained: the call waited for the model
    answer = ast.literal_eval(lines[-1].split(":", 1)[1].strip())
    assert answer["predicted_label"] in queues, answer
    assert answer["predicted_priority"] in priorities, answer
    assert 0.0 <= answer["confidence"] <= 1.0
