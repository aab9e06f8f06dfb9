"""Test helpers for training jobs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from connector.training.lock import training_lock_path


@contextmanager
def held_training_lock(state_dir: Path) -> Iterator[None]:
    """Another process (e.g. the learning loop's or the API's worker) holds the training lock meanwhile."""
    state_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); "
         "l.acquire(); print('held', flush=True); time.sleep(60)", str(training_lock_path(state_dir))],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        yield
    finally:
        holder.kill()
        holder.wait()
