"""Helpers for the end-to-end Request Tracker tests: a marker classifier, configs, a daemon process."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from connector.model.classifier import FieldPrediction, LabelScore, Prediction
from tests.support.rt_server import RtServer

REPO = Path(__file__).resolve().parents[2]

_MARK = re.compile(r"\b([qpc]):([\w.]+)")


class MarkerClassifier:
    """Labels from markers in the text (``q:network p:high c:0.4``); confidence 0.95 unless ``c:`` says.

    Lets a test decide exactly what the "model" predicts for each ticket.
    """

    fields = ("queue", "priority")
    version = "queue=marker-1,priority=marker-1"

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for text in texts:
            marks = dict(_MARK.findall(text.lower()))
            confidence = float(marks.get("c", "0.95"))
            fields = {}
            for field, key, default in (("queue", "q", "software"), ("priority", "p", "normal")):
                label = marks.get(key, default)
                fields[field] = FieldPrediction(label, confidence, (LabelScore(label, confidence),))
            out.append(Prediction(fields, self.version))
        return out


QUEUE_MAP = {"network": "Network", "hardware": "Hardware", "software": "Software"}
PRIORITY_MAP = {"low": "10", "normal": "50", "high": "90"}


def system_section(
    rt: RtServer,
    source_queue: str,
    *,
    mode: str = "apply",
    token: str | None = None,
    queue_low: str = "fallback",
    **extra: Any,
) -> dict[str, Any]:
    queue_routing: dict[str, Any] = {"map": dict(QUEUE_MAP), "threshold": 0.7, "low_confidence": queue_low}
    if queue_low == "fallback":
        queue_routing["fallback"] = "Fallback"
    section: dict[str, Any] = {
        "type": "request_tracker",
        "connection": {"base_url": rt.base_url, "token": token or rt.tokens["connector"]},
        "source": {"queues": [source_queue], "states": ["new"]},
        "poll_interval": 2,
        "page_size": 10,
        "max_concurrent_writes": 2,
        "mode": mode,
        "routing": {
            "queue": queue_routing,
            "priority": {"map": dict(PRIORITY_MAP), "threshold": 0.7, "low_confidence": "leave"},
        },
        "note": {"subject": "Automatic routing"},
    }
    section.update(extra)
    return section


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``helpdesk-connector ARGS`` (as ``python -m connector``)."""
    return subprocess.run(
        [sys.executable, "-m", "connector", *args], cwd=REPO, env=env or daemon_env(), capture_output=True,
        text=True, timeout=timeout,
    )


def daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class DaemonProcess:
    """``helpdesk-connector run`` in a child process, its output in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(self.config), *extra],
            cwd=REPO, env=daemon_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        out.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
              on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def decisions(db: Path, system: str = "rt") -> dict[str, dict[str, Any]]:
    """ticket id -> {status, reason, planned, applied} from the daemon's SQLite store (empty if none yet)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "select ticket_id, status, reason, error, attempts from decisions where system = ?", (system,)
        ).fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return {}
    finally:
        con.close()
    return {r[0]: {"status": r[1], "reason": r[2], "error": r[3], "attempts": r[4]} for r in rows}


def writing_now(db: Path) -> bool:
    """Whether the daemon is in the middle of a batch: a ticket routed, others claimed and not yet written."""
    found = list(decisions(db).values())
    return any(d["status"] == "applied" for d in found) and any(d["status"] == "claimed" for d in found)
