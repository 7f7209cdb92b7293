"""Consistency levels and the hooks around a point's instant.

The levels, weakest first (DESIGN.md, "Consistency"):

- ``crash``: the disks as a power cut would leave them, every member at one instant;
- ``filesystem``: every guest's filesystems frozen through the guest agent first, so
  each is clean at the instant;
- ``application``: pre hooks (host scripts, commands in the guests) before the freeze
  and post hooks after the thaw, so applications flush and hold their own state.

A member without a working guest agent degrades to ``crash``; the point records the
level each VM reached, and the job fails only when the required level is higher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stasis.errors import UsageError

LEVELS = ("crash", "filesystem", "application")
DEFAULT_HOOK_TIMEOUT_S = 60.0


def level_rank(level: str) -> int:
    try:
        return LEVELS.index(level)
    except ValueError:
        raise UsageError(f"'{level}' is not a consistency level "
                         f"(one of {', '.join(LEVELS)})") from None


@dataclass(frozen=True)
class GuestCommand:
    """A command run with ``/bin/sh -c`` inside VM ``vm`` through its guest agent."""

    vm: str
    command: str


@dataclass
class Hooks:
    """What runs around the instant at the ``application`` level.

    Pre hooks run in order (host scripts first, then the guest commands); the first
    one that fails or outlasts ``timeout_s`` aborts the point before anything is
    frozen. Post hooks all run, after every member is thawed and resumed; their
    failures are recorded in the point and the result, not fatal.
    """

    pre_host: list[str] = field(default_factory=list)
    post_host: list[str] = field(default_factory=list)
    pre_guest: list[GuestCommand] = field(default_factory=list)
    post_guest: list[GuestCommand] = field(default_factory=list)
    timeout_s: float = DEFAULT_HOOK_TIMEOUT_S

    def __bool__(self) -> bool:
        return bool(self.pre_host or self.post_host or self.pre_guest or self.post_guest)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Hooks:
        raw = raw or {}
        return cls(
            pre_host=list(raw.get("pre_host", [])),
            post_host=list(raw.get("post_host", [])),
            pre_guest=[GuestCommand(**g) for g in raw.get("pre_guest", [])],
            post_guest=[GuestCommand(**g) for g in raw.get("post_guest", [])],
            timeout_s=float(raw.get("timeout_s", DEFAULT_HOOK_TIMEOUT_S)),
        )


def parse_guest_command(text: str) -> GuestCommand:
    """``VM:COMMAND`` (the CLI's form of a guest hook)."""
    vm, sep, command = text.partition(":")
    if not sep or not vm or not command.strip():
        raise UsageError(f"a guest hook is VM:COMMAND, not '{text}'")
    return GuestCommand(vm, command)
