"""Process memory tuning for the data path.

glibc serves allocations above its mmap threshold with a fresh mmap and returns
them with munmap. The data path allocates and frees several 4 MiB buffers per chunk
in many threads, so by default every chunk costs thousands of page faults and a
TLB shootdown across cores: measured here, that halved backup throughput. Fixing
the threshold above the largest chunk keeps those buffers in the heap, where they
are reused. Peak memory stays bounded by the pipeline's in-flight limit.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses a larger threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MAX_MMAP_THRESHOLD = 32 << 20


def tune_allocator(largest_buffer: int = MAX_MMAP_THRESHOLD) -> bool:
    """Keep buffers up to ``largest_buffer`` in the heap; True if glibc agreed."""
    try:
        # The C library this process already runs on, looked up among its loaded
        # symbols: ctypes.util.find_library would run ``ldconfig -p`` at every start.
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    ok = mallopt(M_MMAP_THRESHOLD, largest_buffer) == 1
    return bool(ok and mallopt(M_TRIM_THRESHOLD, 4 * largest_buffer) == 1)
