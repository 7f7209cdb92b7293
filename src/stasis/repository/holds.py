"""Holds: a point kept past retention, recorded in the repository itself.

A hold is a small JSON object sealed as kind 4 under ``holds/<point id>`` (see
docs/format.md, "Holds"). It lives in the repository rather than in the catalog so
that a disaster-recovery site, which has only the repository, still knows which
points must not be pruned (DESIGN.md, promise 5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Object kinds 1 to 3 are chunks, disk indexes and manifests (objects.py).
KIND_HOLD = 4
PREFIX = "holds/"


class HoldFormatError(Exception):
    pass


def hold_key(point_id: str) -> str:
    return f"{PREFIX}{point_id}"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _parse(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise HoldFormatError(f"hold field {field!r} is not a date-time string")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise HoldFormatError(f"hold field {field!r} is not ISO 8601: {value!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Hold:
    """One point kept past retention until ``until`` (None: until released).

    ``damaged`` marks a hold object that exists but cannot be read: it is treated
    as a hold without end, since keeping a point by mistake costs space while
    deleting one by mistake cannot be undone.
    """

    point: str
    until: datetime | None
    reason: str = ""
    created: datetime | None = None
    by: str = ""
    damaged: bool = False

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def describe(self) -> str:
        when = "until released" if self.until is None else f"until {_iso(self.until)}"
        return f"held {when}: {self.reason}" if self.reason else f"held {when}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "until": None if self.until is None else _iso(self.until),
            "reason": self.reason,
            "created": None if self.created is None else _iso(self.created),
            "by": self.by,
        }

    def encode(self) -> bytes:
        return json.dumps(
            {"format_version": 1, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Hold:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HoldFormatError(f"hold is not JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("format_version") != 1:
            raise HoldFormatError("hold is not a version 1 hold object")
        point = raw.get("point")
        if not isinstance(point, str):
            raise HoldFormatError("hold names no point")
        until = raw.get("until")
        created = raw.get("created")
        return cls(
            point=point,
            until=None if until is None else _parse(until, "until"),
            reason=str(raw.get("reason", "")),
            created=None if created is None else _parse(created, "created"),
            by=str(raw.get("by", "")),
        )
