"""Clocks for tests (:class:`stasis.clock.Clock`): one the test moves, one that races."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class ManualClock:
    """Stands still until the test moves it; ``sleep`` moves it instead of waiting."""

    def __init__(self, start: datetime = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) -> None:
        self._now = start
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        self.tick(seconds=seconds)

    def tick(self, **delta: float) -> None:
        """Move forward by ``timedelta(**delta)``, e.g. ``tick(minutes=1)``."""
        step = timedelta(**delta)
        self._now += step
        self._monotonic += step.total_seconds()

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (wall time only: the monotonic count never goes back)."""
        self._monotonic += max(0.0, (when - self._now).total_seconds())
        self._now = when


class ScaledClock:
    """The system's clocks running ``rate`` times as fast from the Unix time ``epoch``,
    so that a service's 1m schedule comes every few seconds."""

    def __init__(self, rate: float, epoch: float) -> None:
        self.rate, self.epoch = rate, epoch
        self._started = time.monotonic()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.epoch + (time.time() - self.epoch) * self.rate, UTC)

    def monotonic(self) -> float:
        return self._started + (time.monotonic() - self._started) * self.rate

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / self.rate)
