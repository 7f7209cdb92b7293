"""Drill proofs: the newest recovery drill of a VM or a group, recorded in the
repository itself beside the points it proved.

A proof is a small JSON object sealed as kind 6 under ``drills/<name>``, where the name
is the keyed BLAKE3 of the subject (so the store learns no VM or group name; see
docs/format.md, "Drill proofs"). It lives in the repository so that a second site that
has only the repository knows which points were brought up and checked, when, and in
how long (DESIGN.md, promise 5); the catalog's ``drills`` table is the local index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3

# Object kinds 1 to 5 are chunks, disk indexes, manifests, holds, index pages.
KIND_DRILL = 6
PREFIX = "drills/"
SUBJECT_KINDS = ("vm", "group")


class DrillProofFormatError(Exception):
    pass


def proof_name(id_key: bytes, subject_kind: str, subject: str) -> str:
    """The object name of the proof of ``subject``: keyed, so that it names nothing."""
    data = b"stasis-drill\0" + subject_kind.encode() + b"\0" + subject.encode()
    return blake3.blake3(data, key=id_key).hexdigest()


def proof_key(name: str) -> str:
    return f"{PREFIX}{name}"


@dataclass(frozen=True)
class DrillProof:
    """What one drill proved of one VM or group."""

    subject_kind: str  # vm | group
    subject: str
    drill: str  # the drill's id
    point: str  # the point brought up (its id)
    mode: str  # restore | instant
    passed: bool
    rto_s: float | None  # None: a check did not pass
    started: datetime
    ended: datetime
    host: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)  # kind, arg, vm, passed, seconds
    failure: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_kind": self.subject_kind, "subject": self.subject, "drill": self.drill,
            "point": self.point, "mode": self.mode, "passed": self.passed,
            "rto_s": self.rto_s, "started": _iso(self.started), "ended": _iso(self.ended),
            "host": self.host, "checks": self.checks, "failure": self.failure,
        }

    def encode(self) -> bytes:
        return json.dumps({"format_version": 1, **self.to_dict()}, sort_keys=True,
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> DrillProof:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DrillProofFormatError(f"drill proof is not JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("format_version") != 1:
            raise DrillProofFormatError("not a version 1 drill proof")
        try:
            kind, subject = raw["subject_kind"], raw["subject"]
            if kind not in SUBJECT_KINDS or not isinstance(subject, str):
                raise DrillProofFormatError("the drill proof names no VM or group")
            rto = raw.get("rto_s")
            return cls(kind, subject, str(raw["drill"]), str(raw["point"]), str(raw["mode"]),
                       bool(raw["passed"]), None if rto is None else float(rto),
                       _parse(raw["started"]), _parse(raw["ended"]), str(raw.get("host", "")),
                       list(raw.get("checks") or []), str(raw.get("failure", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise DrillProofFormatError(f"drill proof field missing or wrong: {e}") from None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _parse(value: Any) -> datetime:
    t = datetime.fromisoformat(str(value))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
