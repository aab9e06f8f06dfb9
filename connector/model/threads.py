"""CPU sizing of inference: how many forward passes run at once, and how many torch threads each gets.

On a CPU, small forward passes (a few dozen short tickets) scale poorly over several threads: the
threads spend much of the pass waiting for each other.  Where several passes may run at once (the API's
micro-batching workers), one thread per pass on its own core serves more requests than all cores on one
pass at a time (2 cores, bf16: 106 against 67 requests/s; see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.config import AppConfig

log = logging.getLogger(__name__)

#: ``api.micro_batch_workers: auto`` runs at most this many passes at once on a CPU
MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _on_cpu(config: AppConfig) -> bool:
    from connector.model.classifier import resolve_device

    return resolve_device(config.model.device).type == "cpu"


def micro_batch_workers(config: AppConfig) -> int:
    """``api.micro_batch_workers`` resolved: ``auto`` is one pass per core on a CPU, one on a GPU."""
    workers = config.api.micro_batch_workers
    if workers != "auto":
        return int(workers)
    return min(usable_cores(), MAX_AUTO_WORKERS) if _on_cpu(config) else 1


def cpu_threads(config: AppConfig, *, serving_api: bool) -> int:
    """``model.cpu_threads`` resolved: ``auto`` shares the cores out among the passes that may run at once."""
    threads = config.model.cpu_threads
    if threads != "auto":
        return int(threads)
    passes = micro_batch_workers(config) if serving_api else 1
    return max(1, usable_cores() // passes)


def apply_cpu_threads(config: AppConfig, *, serving_api: bool) -> int | None:
    """Set torch's intra-op threads for this process when the models run on a CPU; the number set, or None."""
    if not _on_cpu(config):
        return None
    import torch

    threads = cpu_threads(config, serving_api=serving_api)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("inference on the CPU: %d torch thread(s) per forward pass", threads)
    return threads
