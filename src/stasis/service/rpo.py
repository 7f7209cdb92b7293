"""The recovery point objective: is the newest good point young enough?

A policy's ``rpo`` is the largest acceptable age of its newest good point. The check
is a pure function of that point's time and an instant handed in, so the service, the
status command and the tests all ask it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from stasis.service.duration import format_duration


@dataclass(frozen=True)
class RpoStatus:
    """The answer for one policy at one instant.

    ``age`` is None when there is no good point at all (always a breach). ``over`` is
    how far past the target the age is (zero when met); ``margin`` how much is left
    before a breach (zero when breached); ``breach_at`` when it breaches if nothing new
    arrives (None without a point).
    """

    met: bool
    target: timedelta
    age: timedelta | None
    over: timedelta
    margin: timedelta
    breach_at: datetime | None

    @property
    def breached(self) -> bool:
        return not self.met

    def describe(self) -> str:
        if self.age is None:
            return f"RPO {format_duration(self.target)} breached: no good point yet"
        if self.met:
            return (f"RPO {format_duration(self.target)} met: newest good point is "
                    f"{format_duration(self.age)} old, {format_duration(self.margin)} to spare")
        return (f"RPO {format_duration(self.target)} breached by {format_duration(self.over)}: "
                f"newest good point is {format_duration(self.age)} old")


def rpo_status(newest_good: datetime | None, now: datetime, target: timedelta) -> RpoStatus:
    """Met when the newest good point is at most ``target`` old at ``now``.

    A point "from the future" (clocks disagree) counts as age zero rather than as a
    larger margin than the target itself.
    """
    if newest_good is None:
        return RpoStatus(met=False, target=target, age=None, over=timedelta(0),
                         margin=timedelta(0), breach_at=None)
    age = max(now - newest_good, timedelta(0))
    met = age <= target
    return RpoStatus(
        met=met, target=target, age=age,
        over=timedelta(0) if met else age - target,
        margin=target - age if met else timedelta(0),
        breach_at=newest_good + target,
    )
