"""One training at a time, across the REST API's jobs and the learning loop's retraining.

Every training worker holds the file lock at :func:`training_lock_path` for its whole life;
a ``training_jobs`` row counts as queued/running while its process
(:func:`connector.processes.pid_alive`) lives.
"""

from __future__ import annotations

import os
from pathlib import Path


def training_lock_path(state_dir: str | os.PathLike[str]) -> Path:
    """The file lock every training process holds."""
    return Path(state_dir) / "training.lock"
