"""How many worker processes to start: never more than the CPU cores this process may run on.

Every entry point that starts processes (DataLoader workers in DUM/train.py, DUM/test.py and
train_generator.py; the process pools of the data-preparation stages) takes its default from
:func:`resolve_workers`, so that a 2-core machine does not start 4 or 8 loader processes that only
compete for the two cores (PyTorch then warns "This DataLoader will create 4 worker processes in
total. Our suggested max number of worker in current system is 2").

The usable cores are ``len(os.sched_getaffinity(0))`` where the platform has it (it honours
``taskset``, cgroup cpusets and SLURM allocations) and ``os.cpu_count()`` elsewhere. The
scripts' ``*_WORKERS`` variables default to ``auto``, which each entry point resolves here.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional

AUTO = "auto"


def usable_cores() -> int:
    """CPU cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def workers_type(value: str) -> Optional[int]:
    """argparse type of a ``--workers`` flag: ``auto`` (None) or an integer >= 0."""
    if str(value).strip().lower() == AUTO:
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"the number of processes must be >= 0, got {n}")
    return n


def local_processes() -> int:
    """Training processes sharing this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_workers(requested: Optional[int], preferred: Optional[int], what: str,
                    log: Optional[logging.Logger] = None, cap_explicit: bool = False) -> int:
    """The worker count to use, said in the log.

    requested: the flag's value; None means 'auto': ``preferred`` (the paper's or the script's
    value) capped at this process's share of the usable cores (the cores divided by the training
    processes on the machine, see :func:`local_processes`; 0 = load in the main process), or that
    whole share when ``preferred`` is None. An explicit request above the share is kept for
    DataLoaders (their workers also wait on disks, and the user asked for it) with a warning, and
    reduced when ``cap_explicit``.
    """
    cores, procs = usable_cores(), local_processes()
    share = cores // procs if procs > 1 else cores
    where = f"{cores} usable CPU cores" + (f" shared by {procs} processes" if procs > 1 else "")
    if requested is None:
        n = share if preferred is None else min(preferred, share)
        if log is not None:
            if preferred is not None and n < preferred:
                log.info("%s: %d (the default %d, capped at the %s)", what, n, preferred, where)
            else:
                log.info("%s: %d (%s)", what, n, where)
        return n
    if requested > share:
        if cap_explicit:
            if log is not None:
                log.info("%s: %d asked for, %d used (the %s)", what, requested, max(share, 1), where)
            return max(share, 1)
        if log is not None:
            log.warning("%s: %d asked for, more than the %s; they will compete for them", what, requested, where)
    return requested

