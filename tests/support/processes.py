"""Helpers of the tests that watch other processes."""

from __future__ import annotations

import os
import time


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once no process ``pid`` exists (within ``timeout`` seconds), else False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
