"""The checked value types of a policy file, for its Pydantic models.

Each is an ``Annotated`` type whose validator raises one error kind with the words
a message shows: ``must be a whole number >= 0, not "seven"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from stasis.errors import UsageError
from stasis.hypervisor import labels as lb
from stasis.protection.consistency import LEVELS
from stasis.service.duration import parse_duration
from stasis.service.policy.model import EVENTS
from stasis.service.schedule import check_cron, check_interval, zone

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
# No '/' or ':': a repository name can never be read as a path or a URL.
_REPOSITORY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")


def show(value: Any) -> str:
    """A value as TOML would write it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _checked(kind: str, check: Callable[[Any], Any], wants: str) -> BeforeValidator:
    def validate(value: Any) -> Any:
        try:
            return check(value)
        except (ValueError, TypeError) as e:
            reason = f" ({e})" if str(e) and kind in ("cron", "interval") else ""
            raise PydanticCustomError(
                kind, "must be {wants}, not {shown}{reason}",
                {"wants": wants, "shown": show(value), "reason": reason}) from None
    return BeforeValidator(validate)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError()
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError()
    return value


def _duration(value: Any) -> timedelta:
    return parse_duration(_str(value))


def _interval(value: Any) -> timedelta:
    every = _duration(value)
    try:
        return check_interval(every)
    except ValueError as e:
        raise ValueError(str(e).removeprefix("an interval ")) from None


def _cron(value: Any) -> str:
    text = _str(value)
    try:
        return check_cron(" ".join(text.split()))
    except ValueError as e:
        raise ValueError(str(e).split(": ", 1)[-1]) from None


def _zone(value: Any) -> str:
    zone(_str(value))
    return str(value)


def _level(value: Any) -> str:
    if _str(value) not in LEVELS:
        raise ValueError()
    return str(value)


def _event(value: Any) -> str:
    if _str(value) not in EVENTS:
        raise ValueError()
    return str(value)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError()
    return value


def _url(value: Any) -> str:
    if not re.fullmatch(r"https?://[^\s/]+\S*", _str(value)):
        raise ValueError()
    return str(value)


def _address(value: Any) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", _str(value)):
        raise ValueError()
    return str(value)


def _span(value: Any) -> str:
    from stasis.service.retention import Duration

    try:
        return str(Duration.parse(_str(value)))
    except UsageError:
        raise ValueError() from None


def _vm_name(value: Any) -> str:
    text = _str(value)
    if not text or text != text.strip():
        raise ValueError()
    return text


def _policy_name(value: Any) -> str:
    if not _NAME.fullmatch(_str(value)):
        raise ValueError()
    return str(value)


def _repository_name(value: Any) -> str:
    if not _REPOSITORY_NAME.fullmatch(_str(value)):
        raise ValueError()
    return str(value)


def _label_key(value: Any) -> str:
    try:
        return lb.check_key(_str(value))
    except UsageError:
        raise ValueError() from None


Count = Annotated[int, _checked("count", _count, "a whole number >= 0")]
DurationValue = Annotated[timedelta, _checked(
    "duration", _duration, "a duration such as 90s, 15m, 26h, 7d or 1h30m")]
Interval = Annotated[timedelta, _checked(
    "interval", _interval, "an interval such as 15m, 1h, 6h or 1d")]
Cron = Annotated[str, _checked("cron", _cron, "a 5-field cron expression such as "
                                              "\"0 2 * * *\"")]
Zone = Annotated[str, _checked("timezone", _zone, "an IANA time zone such as UTC or "
                                                  "Europe/Berlin")]
Level = Annotated[str, _checked("level", _level, "one of " + ", ".join(LEVELS))]
Event = Annotated[str, _checked("event", _event, "one of " + ", ".join(EVENTS))]
Port = Annotated[int, _checked("port", _port, "a TCP port from 1 to 65535")]
Url = Annotated[str, _checked("url", _url, "an http:// or https:// URL")]
Address = Annotated[str, _checked("address", _address, "an email address")]
Span = Annotated[str, _checked(
    "span", _span, "a span such as 36h, 10d, 2w, 6m (months) or 1y")]
VmName = Annotated[str, _checked("vm", _vm_name, "a VM name (no spaces around it)")]
PolicyName = Annotated[str, _checked(
    "name", _policy_name, "1 to 128 letters, digits, '.', '_', '@', '+' or '-', starting "
                          "with a letter or digit")]
RepositoryName = Annotated[str, _checked(
    "repository", _repository_name, "a repository name: 1 to 64 letters, digits, '.', '_' "
                                    "or '-', starting with a letter")]
Text = Annotated[str, _checked("string", _str, "a string")]
LabelKey = Annotated[str, _checked("label", _label_key, "a label key (letters, digits, "
                                                       "'.', '_', '/', '-')")]
