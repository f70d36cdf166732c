"""What this process may use of the machine, and how it asks for memory."""

from __future__ import annotations

import ctypes
import os
import platform
import re
from contextlib import contextmanager
from typing import Iterator

import torch

# glibc's mallopt(3) parameters (malloc.h) and the values keep_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 256 << 20  # free memory the heap keeps at its top before giving it back
_USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, else all of the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first ``name : value`` line's value in ``cpuinfo`` (Linux's list of the CPUs, e.g. ``model name``,
    ``vendor_id``); None where the file or the field is missing."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, colon, value = line.partition(":")
                if colon and key.strip().lower() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU maker's ID (``GenuineIntel``, ``AuthenticAMD``, ...): ``vendor_id`` of ``cpuinfo`` on Linux,
    else the ID in ``platform.processor()`` (Windows writes it there); None where neither says."""
    if vendor := cpuinfo_field("vendor_id", cpuinfo):
        return vendor
    found = re.search(r"GenuineIntel|AuthenticAMD|HygonGenuine", platform.processor())
    return found.group() if found else None


def training_threads(loader_workers: int) -> int:
    """Torch threads for training beside ``loader_workers`` loader processes: torch's count less
    theirs, at least one; a user's ``OMP_NUM_THREADS`` is kept as it is.

    Each worker augments the next batches on a thread of its own (``DataLoader`` gives it one)
    while the model trains. Training threads on every CPU as well oversubscribe them, and an OpenMP
    thread that waits for a descheduled peer spins. ``make demo``'s training on a 2-core AMD EPYC:
    8.1 s an epoch on 2 threads without a worker, 6.0 s on 1 thread with one (and 2 threads with
    one was slower than without: 3 epochs in 38-42 s against 29-33).
    """
    threads = torch.get_num_threads()
    if loader_workers and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, threads - loader_workers)
    return threads


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` torch threads, then give back the count it found.

    For work too small to split (one streaming step, one synthesised clip), extra threads only
    add synchronisation: on a 2-core AMD EPYC a streaming step took 11.3 us at 2 threads and 10.0
    at 1 (MKL's tanh consults its thread pool on every call), and on a busy CPU they spin.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep large freed blocks for reuse instead of returning them to the OS.

    By default glibc unmaps a freed block above a moving threshold and trims free memory off the
    top of its heap, so the next batch's tensors of the same sizes land on fresh pages that the
    kernel maps in 4 KiB at a time: one training step of the default model (batch 32) took
    ~3,000 page faults, and ``make demo``'s training on a 2-core KVM AMD EPYC spent 108 s of
    6 min 53 s in the kernel (6.5 s of 5 min 21 s with this). PyTorch's CPU tuning guide gives
    the same cause for preloading jemalloc or tcmalloc; mallopt(3) gets it from glibc itself,
    no preload. The cost is a resident size near the peak (+3 % in that run). Both settings
    are needed: setting the trim threshold alone also fixes the unmap threshold at 128 KiB,
    which doubled the time of 3 epochs (75 s against 38).

    The commands call it at their start; importing speechrnn as a library changes nothing.
    Returns whether it applied: only on glibc, and never over the user's own malloc settings
    (``MALLOC_*_`` variables or ``glibc.malloc`` tunables).
    """
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in _USER_MALLOC_SETTINGS) \
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own glibc
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
