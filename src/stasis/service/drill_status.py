"""A drill target: is the newest drill of a VM or group good, fast and recent enough?

A policy's ``drill`` section holds its VMs and groups to an ``rto`` (the measured
recovery time of the newest drill) and a ``max_age`` (the age of the newest drill).
The newest drill must also have passed. Like the RPO check, this is a pure function of
the drill's record and an instant handed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stasis.service.duration import format_duration


@dataclass(frozen=True)
class DrillStatus:
    """``state``: met, breached, or none (no drill target applies). ``reasons`` say
    what is breached, in words."""

    subject: str
    state: str
    last_drill: str | None = None
    point: str | None = None
    mode: str | None = None
    passed: bool | None = None
    ended: datetime | None = None
    rto_s: float | None = None
    rto_target_s: float | None = None
    age_s: float | None = None
    max_age_s: float | None = None
    reasons: tuple[str, ...] = ()

    @property
    def breached(self) -> bool:
        return self.state == "breached"

    def describe(self) -> str:
        if self.last_drill is None:
            return f"{self.subject}: never drilled" + (
                " (breached)" if self.breached else "")
        text = (f"{self.subject}: drill {self.last_drill} "
                f"{'passed' if self.passed else 'failed'}"
                + (f", RTO {self.rto_s:.0f}s" if self.rto_s is not None else "")
                + (f", {format_duration(timedelta(seconds=int(self.age_s)))} ago"
                   if self.age_s is not None and self.age_s >= 1 else ""))
        return text + (f"; breached: {'; '.join(self.reasons)}" if self.reasons else "")

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ended"] = self.ended.isoformat() if self.ended else None
        d["reasons"] = list(self.reasons)
        d["detail"] = self.describe()
        return d


def drill_status(subject: str, newest: Any | None, now: datetime, *,
                 rto: timedelta | None, max_age: timedelta | None) -> DrillStatus:
    """The status of ``subject`` given its newest drill record (``catalog.DrillRecord``
    or None), against the targets (None: not held to one)."""
    held = rto is not None or max_age is not None
    if newest is None:
        return DrillStatus(subject, "breached" if held else "none",
                           rto_target_s=rto.total_seconds() if rto else None,
                           max_age_s=max_age.total_seconds() if max_age else None,
                           reasons=("never drilled",) if held else ())
    age = max((now - newest.ended).total_seconds(), 0.0)
    reasons = []
    if not newest.passed:
        reasons.append("the newest drill failed" + (f" ({newest.failure})"
                                                    if newest.failure else ""))
    if rto is not None and newest.rto_s is not None and newest.rto_s > rto.total_seconds():
        reasons.append(f"measured RTO {newest.rto_s:.0f}s is over the target "
                       f"{format_duration(rto)}")
    if max_age is not None and age > max_age.total_seconds():
        reasons.append(f"the newest drill is older than {format_duration(max_age)}")
    state = "breached" if reasons else "met"
    return DrillStatus(
        subject, state, newest.drill_id, newest.point, newest.mode, newest.passed,
        newest.ended, newest.rto_s, rto.total_seconds() if rto else None, age,
        max_age.total_seconds() if max_age else None, tuple(reasons))
