"""A training worker lives no longer than the process that started it.

On Linux the kernel signals the worker when its starter dies (``prctl(PR_SET_PDEATHSIG)``,
even after a ``kill -9``); everywhere a thread also checks the parent pid every second.
This holds for every kind of job (the API server's and the daemon's or CLI's retraining).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)


class ParentWatch:
    """Ties the worker's life to the process that started it (the API server, the daemon or the CLI).

    On Linux the kernel signals the worker when that process dies (``prctl(PR_SET_PDEATHSIG)``, even after a
    ``kill -9``); everywhere a thread also checks the parent pid every second.  Either way the training is
    cancelled, nothing is registered or activated, and the job ends ``failed`` saying the starter is gone.
    The death signal is SIGUSR1, not SIGTERM: the kernel also sends it when the *thread* that started the
    worker ends while its process lives on, so the handler acts only when the parent pid really changed.
    """

    def __init__(self, parent_pid: int | None, cancel: threading.Event, interval: float = 1.0) -> None:
        self.parent_pid = parent_pid
        self.cancel = cancel
        self.interval = interval

    @property
    def gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def start(self) -> None:
        if self.parent_pid is None:
            return
        if threading.current_thread() is threading.main_thread():
            signal.signal(_DEATH_SIGNAL, self._on_death_signal)
            _set_parent_death_signal(_DEATH_SIGNAL)
        if self.gone:  # it died before the signal was armed
            self.cancel.set()
            return
        threading.Thread(target=self._watch, name="parent-watch", daemon=True).start()

    def _on_death_signal(self, _signum: int, _frame: object) -> None:
        if self.gone:
            self.cancel.set()

    def _watch(self) -> None:
        while not self.cancel.wait(self.interval):
            if self.gone:
                log.warning("the process that started this training (pid %s) is gone: stopping", self.parent_pid)
                self.cancel.set()
                return


def _set_parent_death_signal(signum: int) -> None:
    """Linux: have the kernel send ``signum`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); the parent pid is still watched", ctypes.get_errno())
    except (OSError, AttributeError):
        log.warning("prctl is not available; the parent pid is still watched")


_PR_SET_PDEATHSIG = 1
_DEATH_SIGNAL = signal.SIGUSR1
