"""Process memory tuning for the data path.

glibc serves allocations above its mmap threshold with a fresh mmap and returns
them with munmap. The data path allocates and frees several 4 MiB buffers per chunk
in many threads, so by default every chunk costs thousands of page faults and a
TLB shootdown across cores: measured here, that halved backup throughput. Fixing
the threshold above the largest chunk keeps those buffers in the heap, where they
are reused. Peak memory stays bounded by the pipeline's in-flight limit.

A long-lived process (``stasis serve``) pays for that: each job's threads take their
buffers from one of glibc's arenas (up to 8 per core), and an arena keeps what was
freed in it, up to the trim threshold, for the next thread that lands on it. Job after
job, more arenas hold a pipeline's worth of freed buffers, and the service's resident
memory crept up by about 3 MiB per 100 jobs (bench/bench_memory.py).
:func:`release_free_memory` hands that back once a job has ended, but not the top of a
thread's arena: over 1,000 jobs the service still grew 1.3 MiB per 100 jobs with it, and
0.3 MiB with its arenas limited to two as well (:func:`limit_arenas`; the data path's
buffers are large and few, so two arenas are no contention for them).
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SERVICE_ARENAS = 2
# glibc refuses a larger threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MAX_MMAP_THRESHOLD = 32 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        # The C library this process already runs on, looked up among its loaded
        # symbols: ctypes.util.find_library would run ``ldconfig -p`` at every start.
        return ctypes.CDLL(None)
    except OSError:
        return None


def tune_allocator(largest_buffer: int = MAX_MMAP_THRESHOLD) -> bool:
    """Keep buffers up to ``largest_buffer`` in the heap; True if glibc agreed."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False  # not glibc: nothing to tune
    ok = mallopt(M_MMAP_THRESHOLD, largest_buffer) == 1
    return bool(ok and mallopt(M_TRIM_THRESHOLD, 4 * largest_buffer) == 1)


def release_free_memory() -> bool:
    """Return the memory freed in every arena to the system (glibc's ``malloc_trim``),
    as a long-lived process does between jobs; True if any was returned. It takes a
    few milliseconds, and the next job's buffers come from fresh pages."""
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim is not None and trim(0) == 1)


def limit_arenas(count: int = SERVICE_ARENAS) -> bool:
    """At most ``count`` glibc arenas for the threads started from now on (a
    long-lived process's, before its first job); True if glibc agreed."""
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt is not None and mallopt(M_ARENA_MAX, count) == 1)
