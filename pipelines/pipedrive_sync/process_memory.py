"""Process-wide memory settings for a sync process: glibc's allocator and arrow's.

Applied by the command line (and the benchmark, which measures what it does) before a run,
never by `run_sync` itself: a program that calls `run_sync` (an Airflow worker) keeps its own
allocator settings unless it calls `tune_for_sync()` too."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import pyarrow as pa

M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc's malloc.h)
MMAP_THRESHOLD_BYTES = 512 * 1024
JEMALLOC_DECAY_MS = 100  # how long jemalloc keeps freed pages before handing them back


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def map_large_blocks_separately() -> bool:
    """Serve allocations of 512 KiB and more from their own memory maps, returned to the OS when
    freed; True where this is glibc and it took the setting.

    glibc raises this threshold by itself once a large block is freed, after which 2 MB page
    bodies, parsed pages and DuckDB's buffers are carved out of the per-thread heaps; those keep
    what is freed. A 1M-deal sync held 250 MB of free heap that way (peak 503 MB vs 450 MB).
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def arrow_memory_from_jemalloc() -> str:
    """Arrow allocates from jemalloc where the wheel has it; returns the allocator in use.

    Arrow's default, mimalloc, keeps freed pages in per-thread heaps that only their own thread
    collects: in a 1M-deal sync it held ~150 MB that the decode threads had freed (peak 437 to 472
    MB). jemalloc returns them after its decay time (peak 384 MB), at the same speed.
    That time is set to `JEMALLOC_DECAY_MS` for the arenas created from now on: with arrow's
    own, pages freed by one chunk were still held when the next one peaked.
    """
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # built without it (Windows wheels)
        return pa.default_memory_pool().backend_name
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(JEMALLOC_DECAY_MS)
    return pool.backend_name


def tune_for_sync() -> None:
    """Both settings: freed page bodies and arrow buffers go back to the OS (see README)."""
    map_large_blocks_separately()
    arrow_memory_from_jemalloc()
