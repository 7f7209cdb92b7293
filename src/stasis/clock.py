"""Time, injected: the one place Stasis reads the system's clocks.

Scheduling, the job runner, retention, RPO status, the catalog's timestamps and
garbage collection receive a :class:`Clock` instead of calling :mod:`time` or
:func:`datetime.now`, so their tests move a clock forward instead of sleeping.
Production passes :data:`SYSTEM_CLOCK` (the default everywhere).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall time, a monotonic count and sleeping, from one source.

    ``now`` is aware and in UTC; ``monotonic`` is in seconds from an arbitrary start
    and never goes back (for durations and timeouts, never stored); ``sleep`` waits
    that many seconds of this clock.
    """

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


def utc_now() -> datetime:
    """The system's wall time, aware and in UTC."""
    return SYSTEM_CLOCK.now()
