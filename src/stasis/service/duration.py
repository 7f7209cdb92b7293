"""Durations as policies write them: ``90s``, ``15m``, ``26h``, ``7d``, ``2w``, ``1h30m``.

One or more ``NUMBER UNIT`` parts, largest unit first, units from :data:`UNITS`. No
months or years: their length varies, and an RPO or an interval has to be exact.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS: dict[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"(?:\d+[wdhms])+")


def parse_duration(text: str) -> timedelta:
    """The duration ``text`` names; :class:`ValueError` saying why if it names none."""
    compact = text.strip().lower().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        raise ValueError(f"'{text}' is not a duration (examples: 90s, 15m, 26h, 7d, 1h30m)")
    parts = _PART.findall(compact)
    units = [u for _, u in parts]
    order = list(UNITS)
    if len(set(units)) != len(units) or units != sorted(units, key=order.index):
        raise ValueError(f"'{text}' is not a duration: give each unit once, largest first "
                         "(e.g. 1h30m)")
    return sum((int(n) * UNITS[u] for n, u in parts), timedelta())


def format_duration(value: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back as ``value`` (seconds kept)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    out = []
    for unit, size in UNITS.items():
        n, seconds = divmod(seconds, int(size.total_seconds()))
        if n:
            out.append(f"{n}{unit}")
    return sign + "".join(out)
