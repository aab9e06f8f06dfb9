"""What the bench scripts share: a free local port, stopping a child process, one timed daemon poll.

It imports nothing of the connector at run time: a script may import it before putting the repository
root on ``sys.path``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.daemon import Daemon
    from connector.pipeline import PollResult


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def timed_poll(daemon: Daemon, system: str) -> tuple[PollResult, float]:
    """Set ``daemon`` up, time one forced poll of ``system``, close it: the poll's result and its seconds."""
    await daemon.setup()
    try:
        started = time.perf_counter()
        result = await daemon.poll_system(system, force=True)
        seconds = time.perf_counter() - started
    finally:
        await daemon.close()
    if result is None:
        raise SystemExit(f"{system}: the daemon did not poll it")
    return result, seconds
