"""A fine-tuning run in a separate process, so that it can use a second CPU core while the main process
does something else (``amif demo`` trains its question-only baseline while it pre-trains AMiF).

The child process is started with ``spawn`` (safe with threads and DataLoader workers in the parent),
runs :func:`amif_train.finetune.run_finetune` with ``threads`` torch threads, then ``then(summary)`` if
given (a picklable callable, e.g. a module-level function or a ``functools.partial`` of one), and writes
everything it prints to ``log_path``. ``result()`` of the returned future is the run's summary (plus
``seconds``, its own wall time, and ``then`` / ``then_seconds``) or re-raises the run's exception.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any


def usable_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _finetune_job(cfg: Any, log_path: str, threads: int, then: Callable[[dict], Any] | None) -> dict[str, Any]:
    import torch

    from amif_demo.logs import quiet_libraries
    from amif_train.finetune import run_finetune

    torch.set_num_threads(threads)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log, redirect_stdout(log), redirect_stderr(log):
        quiet_libraries()
        t0 = time.time()
        summary = run_finetune(cfg)
        summary["seconds"] = round(time.time() - t0, 1)
        if then is not None:
            t0 = time.time()
            summary["then"] = then(summary)
            summary["then_seconds"] = round(time.time() - t0, 1)
    return summary


def start_finetune(cfg: Any, log_path: str | Path, threads: int = 1, then: Callable[[dict], Any] | None = None
                   ) -> Future:
    """Start ``run_finetune(cfg)`` (then ``then(summary)``) in a new process; returns a future of its summary."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_finetune_job, cfg, str(log_path), threads, then)
    pool.shutdown(wait=False)  # the process finishes the job, then exits
    return future
