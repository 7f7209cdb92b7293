"""Bounded parallel map over threads, in order, that stops cleanly on failure.

Hashing, zstd, AES-GCM and libnbd release the GIL, so threads keep every core busy
(DESIGN.md, the data path). At most ``in_flight`` tasks are submitted at once, so
memory stays flat however large the disk. On the first error, or on Ctrl-C or
SIGTERM in the caller's thread, tasks not started are dropped, those running are
left to finish, and the exception is raised in the caller.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    # Measured on 2 cores: 4 workers 558 MiB/s, 8 workers 374 MiB/s (oversubscribed).
    return max(4, 2 * (os.cpu_count() or 1))


class Cancelled(Exception):
    """A task was skipped because the run is stopping."""


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = None,
    in_flight: int | None = None,
    name: str = "stasis",
) -> Generator[tuple[T, R], None, None]:
    """Yield (item, fn(item)) in the order of ``items``, running ``fn`` in threads."""
    workers = workers or default_workers()
    in_flight = in_flight or 2 * workers
    stop = threading.Event()

    def guarded(item: T) -> R:
        if stop.is_set():
            raise Cancelled()
        return fn(item)

    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < in_flight:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, pool.submit(guarded, item)))
            if not pending:
                break
            item, fut = pending.popleft()
            yield item, fut.result()
    finally:
        stop.set()
        for _item, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
