"""Policies: what to protect, when, how consistently, how long to keep, whom to tell.

A policy file is TOML with one ``[[policy]]`` table per policy (docs/policies.md has
the format and a full example). :func:`load_policies` reads and checks a file and
returns :class:`Policy` objects; :func:`parse_policies` does the same for text.

Checking happens in two passes over the whole file, so that every problem is
reported at once: Pydantic models (unknown keys forbidden) check each value's type
and form, then the rules between keys (one schedule, ``require`` not above
``consistency``, hooks only at ``application``, unique names, at least one member)
are checked on whatever values were well formed. Each problem names the file, the
line of the key it is about and the policy, e.g.
``policies.toml:12: policy 'nightly': retention.keep_daily must be a whole number
>= 0, not "seven"``. The lines come from a scan of the TOML text
(:func:`key_lines`), since ``tomllib`` keeps none.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from stasis.errors import PolicyError, UsageError
from stasis.hypervisor import labels as lb
from stasis.protection.consistency import LEVELS, GuestCommand, Hooks, level_rank
from stasis.service.duration import parse_duration
from stasis.service.schedule import Schedule, check_cron, check_interval, make_schedule, zone

EVENTS = ("failure", "rpo", "recovered")
"""What a policy can notify about: a failed job, an RPO breach, the RPO met again."""

DEFAULT_EVENTS = ("failure", "rpo")
DEFAULT_WEBHOOK_TIMEOUT = timedelta(seconds=10)
DEFAULT_SMTP_TIMEOUT = timedelta(seconds=30)
DEFAULT_HOOK_TIMEOUT = timedelta(seconds=60)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


# ------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Members:
    """Who a policy protects, resolved again at every run (names, stored groups, selectors)."""

    vms: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    select: tuple[str, ...] = ()  # fnmatch globs on VM names
    labels: Mapping[str, str] = field(default_factory=dict)  # every one must match

    def describe(self) -> str:
        parts = [*(f"vm {v}" for v in self.vms), *(f"group {g}" for g in self.groups),
                 *(f"select {s}" for s in self.select)]
        if self.labels:
            parts.append("labels " + ",".join(f"{k}={v}" for k, v in self.labels.items()))
        return "; ".join(parts)


@dataclass(frozen=True)
class Retention:
    """The policy's retention numbers, as the file gives them.

    ``keep_within`` and ``min_age`` are spans in the retention engine's grammar
    (``36h``, ``10d``, ``2w``, ``6m`` months, ``1y``); :meth:`rules` converts the whole
    to :class:`stasis.service.retention.RetentionRules` in the policy's time zone.
    """

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: str | None = None
    min_age: str | None = None

    def rules(self, timezone: str = "UTC") -> Any:
        """The engine's :class:`~stasis.service.retention.RetentionRules` for these numbers."""
        from stasis.service.retention import Duration, RetentionRules

        return RetentionRules(
            last=self.keep_last, hourly=self.keep_hourly, daily=self.keep_daily,
            weekly=self.keep_weekly, monthly=self.keep_monthly, yearly=self.keep_yearly,
            within=None if self.keep_within is None else Duration.parse(self.keep_within),
            min_age=None if self.min_age is None else Duration.parse(self.min_age),
            timezone=timezone,
        )

    @property
    def keeps_everything(self) -> bool:
        """No rule at all: nothing is pruned under this policy."""
        return not any((self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly,
                        self.keep_monthly, self.keep_yearly, self.keep_within))


@dataclass(frozen=True)
class EmailTarget:
    """Where email notifications go, through SMTP (STARTTLS and login optional)."""

    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password_file: str | None = None  # read at send time: no secret in the policy file
    timeout: timedelta = DEFAULT_SMTP_TIMEOUT


@dataclass(frozen=True)
class NotifyConfig:
    """Which events are told, and to which webhooks and mailboxes."""

    on: frozenset[str] = frozenset(DEFAULT_EVENTS)
    webhooks: tuple[str, ...] = ()
    webhook_timeout: timedelta = DEFAULT_WEBHOOK_TIMEOUT
    email: EmailTarget | None = None

    @property
    def anywhere(self) -> bool:
        return bool(self.webhooks or self.email)


@dataclass(frozen=True)
class Policy:
    """One checked policy. ``origin`` is ``FILE:LINE`` of its table, ``source`` its TOML."""

    name: str
    members: Members
    schedule: Schedule
    consistency: str = "crash"
    require: str | None = None
    hooks: Hooks = field(default_factory=Hooks)
    retention: Retention = field(default_factory=Retention)
    rpo: timedelta | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    description: str = ""
    origin: str = ""
    source: str = ""

    @property
    def timezone(self) -> str:
        return self.schedule.timezone

    @property
    def required_level(self) -> str:
        """The level below which a run fails (``require``, else ``crash``)."""
        return self.require or LEVELS[0]

    def retention_rules(self) -> Any:
        return self.retention.rules(self.timezone)


# ---------------------------------------------------------- value types (pass 1)


def _show(value: Any) -> str:
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
                {"wants": wants, "shown": _show(value), "reason": reason}) from None
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
Text = Annotated[str, _checked("string", _str, "a string")]
LabelKey = Annotated[str, _checked("label", _label_key, "a label key (letters, digits, "
                                                       "'.', '_', '/', '-')")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class _GuestHook(_Model):
    vm: VmName
    command: Text


class _Hooks(_Model):
    pre_host: list[Text] = []
    post_host: list[Text] = []
    pre_guest: list[_GuestHook] = []
    post_guest: list[_GuestHook] = []
    timeout: DurationValue = DEFAULT_HOOK_TIMEOUT


class _Retention(_Model):
    keep_last: Count = 0
    keep_hourly: Count = 0
    keep_daily: Count = 0
    keep_weekly: Count = 0
    keep_monthly: Count = 0
    keep_yearly: Count = 0
    keep_within: Span | None = None
    min_age: Span | None = None


class _Email(_Model):
    host: Text
    port: Port = 25
    sender: Address = Field(alias="from")
    to: Annotated[list[Address], Field(min_length=1)]
    starttls: bool = False
    username: Text | None = None
    password_file: Text | None = None
    timeout: DurationValue = DEFAULT_SMTP_TIMEOUT


class _Notify(_Model):
    on: list[Event] = list(DEFAULT_EVENTS)
    webhooks: list[Url] = []
    webhook_timeout: DurationValue = DEFAULT_WEBHOOK_TIMEOUT
    email: _Email | None = None


class _Policy(_Model):
    name: PolicyName
    description: Text = ""
    vms: list[VmName] = []
    groups: list[Text] = []
    select: list[Text] = []
    labels: dict[LabelKey, Text] = {}
    cron: Cron | None = None
    every: Interval | None = None
    timezone: Zone = "UTC"
    consistency: Level = "crash"
    require: Level | None = None
    hooks: _Hooks = _Hooks()
    retention: _Retention = _Retention()
    rpo: DurationValue | None = None
    notify: _Notify = _Notify()


class _File(_Model):
    policy: Annotated[list[_Policy], Field(min_length=1)]


def _keys_of(model: type[BaseModel]) -> set[str]:
    out: set[str] = set()
    for name, f in model.model_fields.items():
        out.add(f.alias or name)
    return out


_KNOWN_KEYS: dict[str, set[str]] = {
    "": {"policy"}, "policy": _keys_of(_Policy), "hooks": _keys_of(_Hooks),
    "retention": _keys_of(_Retention), "notify": _keys_of(_Notify), "email": _keys_of(_Email),
    "pre_guest": _keys_of(_GuestHook), "post_guest": _keys_of(_GuestHook),
}


# ------------------------------------------------------------- where keys are


KeyPath = tuple[str | int, ...]


class _Scanner:
    """Walks TOML text that ``tomllib`` accepted and notes the line of every key.

    Lines are 1-based. A table header's path gets the header's line, a key its own,
    an array element the line it starts on; arrays of tables count their entries.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self.aot: dict[KeyPath, int] = {}

    def _peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def _skip(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self._advance()
            elif c == "#":
                end = self.s.find("\n", self.i)
                self._advance((len(self.s) if end < 0 else end) - self.i)
            else:
                return

    def _string(self) -> str:
        for quote in ('"""', "'''"):
            if self._peek(3) == quote:
                end = self.i + 3
                while True:
                    end = self.s.index(quote, end)
                    if quote == '"""' and _escaped(self.s, end):
                        end += 1
                        continue
                    break
                while self.s[end + 3:end + 4] == quote[0]:  # """a"""" ends at the last three
                    end += 1
                raw = self.s[self.i + 3:end]
                self._advance(end + 3 - self.i)
                return raw
        quote = self.s[self.i]
        end = self.i + 1
        while self.s[end] != quote or (quote == '"' and _escaped(self.s, end)):
            end += 1
        raw = self.s[self.i + 1:end]
        self._advance(end + 1 - self.i)
        if quote == '"':
            parsed: str = tomllib.loads(f'k = "{raw}"')["k"]
            return parsed
        return raw

    def _key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self._skip(newlines=False)
            if self._peek() in ('"', "'"):
                parts.append(self._string())
            else:
                m = re.compile(r"[A-Za-z0-9_-]+").match(self.s, self.i)
                assert m is not None
                parts.append(m.group())
                self._advance(len(m.group()))
            self._skip(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance()

    def _note(self, path: KeyPath, line: int) -> None:
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    def _value(self, path: KeyPath) -> None:
        self._note(path, self.line)
        c = self._peek()
        if c == "[":
            self._advance()
            index = 0
            while True:
                self._skip(newlines=True)
                if self._peek() == "]":
                    self._advance()
                    return
                self._value((*path, index))
                index += 1
                self._skip(newlines=True)
                if self._peek() == ",":
                    self._advance()
        elif c == "{":
            self._advance()
            while True:
                self._skip(newlines=False)
                if self._peek() == "}":
                    self._advance()
                    return
                if self._peek() == ",":
                    self._advance()
                    continue
                self._pair(path)
        elif c in ('"', "'"):
            self._string()
        else:
            m = re.compile(r"[^,\]}\n#]*").match(self.s, self.i)
            assert m is not None
            self._advance(len(m.group().rstrip()))

    def _pair(self, table: KeyPath) -> None:
        line = self.line
        key = self._key()
        path = (*table, *key)
        self._note(path, line)
        self._skip(newlines=False)
        self._advance()  # '='
        self._skip(newlines=False)
        self._value(path)

    def _resolve(self, key: list[str], array: bool) -> KeyPath:
        path: KeyPath = ()
        for n, part in enumerate(key):
            path = (*path, part)
            last = n == len(key) - 1
            if last and array:
                self.aot[path] = self.aot.get(path, 0) + 1
            if path in self.aot:
                path = (*path, self.aot[path] - 1)
        return path

    def scan(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.i >= len(self.s):
                return self.lines
            line = self.line
            if self._peek() == "[":
                array = self._peek(2) == "[["
                self._advance(2 if array else 1)
                table = self._resolve(self._key(), array)
                self._advance(2 if array else 1)
                self._note(table, line)
                self.lines[table] = line
            else:
                self._pair(table)


def _escaped(text: str, at: int) -> bool:
    """Whether the character at ``at`` follows an odd number of backslashes."""
    n = 0
    while at - n - 1 >= 0 and text[at - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def key_lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key path (``("policy", 0, "retention", "keep_daily")``)."""
    return _Scanner(text).scan()


# ------------------------------------------------------------------ problems


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a policy file, with the line it is on."""

    line: int
    policy: str | None
    text: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        who = f"policy '{self.policy}': " if self.policy else ""
        return f"{where}: {who}{self.text}"


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Report:
    def __init__(self, raw: Mapping[str, Any], lines: Mapping[KeyPath, int]) -> None:
        self.raw = raw
        self.lines = lines
        self.problems: list[Problem] = []

    def line_of(self, path: KeyPath) -> int:
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1

    def policy_name(self, index: int) -> str:
        policies = self.raw.get("policy")
        if isinstance(policies, list) and index < len(policies):
            entry = policies[index]
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                return str(entry["name"])
        return f"#{index + 1}"

    def add(self, path: KeyPath, text: str) -> None:
        policy = None
        if len(path) >= 2 and path[0] == "policy" and isinstance(path[1], int):
            policy = self.policy_name(path[1])
        self.problems.append(Problem(self.line_of(path), policy, text))


_MESSAGES = {
    "string_type": "must be a string, not {shown}",
    "list_type": "must be an array, not {shown}",
    "bool_type": "must be true or false, not {shown}",
    "dict_type": "must be a table, not {shown}",
    "model_type": "must be a table, not {shown}",
    "model_attributes_type": "must be a table, not {shown}",
    "int_type": "must be a whole number, not {shown}",
}


def _pydantic_problems(report: _Report, error: ValidationError) -> None:
    for e in error.errors():
        loc: KeyPath = tuple(e["loc"])
        rest = loc[2:] if len(loc) >= 2 and loc[0] == "policy" else loc
        what = _dotted(rest) or "the file"
        kind = e["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            section = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "")
            known = _KNOWN_KEYS.get(section, set())
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            where = f" in {_dotted(rest[:-1])}" if rest[:-1] else ""
            text = f"unknown key '{key}'{where}"
            text += f" (did you mean '{hint[0]}'?)" if hint else (
                f" (known: {', '.join(sorted(known))})" if known else "")
        elif kind == "missing":
            text = f"{what} is missing"
            if loc == ("policy",):
                text = "no [[policy]] table: a policy file holds one or more"
        elif kind == "too_short":
            text = f"{what} must not be empty"
            if loc == ("policy",):
                text = "no [[policy]] table: a policy file holds one or more"
        elif kind == "list_type" and loc == ("policy",):
            text = ("policies are [[policy]] tables, one per policy (an array of tables), "
                    f"not {_show(e.get('input'))}")
        elif kind in _MESSAGES:
            text = f"{what} " + _MESSAGES[kind].format(shown=_show(e.get("input")))
        else:
            text = f"{what} {e['msg']}"
        report.add(loc, text)


def _rule_problems(report: _Report) -> None:
    """The rules between keys, on the values that are well formed."""
    policies = report.raw.get("policy")
    if not isinstance(policies, list):
        return
    seen: dict[str, int] = {}
    for index, p in enumerate(policies):
        if not isinstance(p, dict):
            continue
        at: KeyPath = ("policy", index)
        name = p.get("name")
        if isinstance(name, str):
            if name in seen:
                report.add((*at, "name"), f"the name is used by the policy at line "
                                          f"{seen[name]} too; names must be unique")
            else:
                seen[name] = report.line_of((*at, "name"))
        if "cron" in p and "every" in p:
            report.add((*at, "every"), "has both cron and every: give one of them")
        elif "cron" not in p and "every" not in p:
            report.add(at, "has no schedule: give cron = \"0 2 * * *\" or every = \"6h\"")
        if not any(p.get(k) for k in ("vms", "groups", "select", "labels")):
            report.add(at, "has no members: give vms, groups, select or labels")
        vms = p.get("vms")
        if isinstance(vms, list):
            for n, vm in enumerate(vms):
                if isinstance(vm, str) and vms.index(vm) != n:
                    report.add((*at, "vms", n), f"vms names '{vm}' twice")
        consistency = p.get("consistency", LEVELS[0])
        require = p.get("require")
        if consistency in LEVELS and require in LEVELS and (
                level_rank(require) > level_rank(consistency)):
            report.add((*at, "require"),
                       f"require '{require}' is above consistency '{consistency}': a run "
                       "never reaches more than it attempts; raise consistency or lower "
                       "require")
        hooks = p.get("hooks")
        if isinstance(hooks, dict) and any(
                hooks.get(k) for k in ("pre_host", "post_host", "pre_guest", "post_guest")) \
                and consistency in LEVELS and consistency != "application":
            report.add((*at, "hooks"),
                       f"hooks run only at consistency 'application', and this policy's is "
                       f"'{consistency}': set consistency = \"application\" or drop the hooks")
        notify = p.get("notify")
        if isinstance(notify, dict):
            on = notify.get("on")
            if isinstance(on, list) and "rpo" in on and "rpo" not in p:
                report.add((*at, "notify", "on"),
                           "notify.on has 'rpo' but the policy sets no rpo")
            if not notify.get("webhooks") and not notify.get("email"):
                report.add((*at, "notify"), "notify names no webhooks and no email")


# ------------------------------------------------------------------- building


def _build(m: _Policy, *, origin: str, source: str) -> Policy:
    schedule = make_schedule(cron=m.cron, every=m.every, timezone=m.timezone)
    hooks = Hooks(
        pre_host=list(m.hooks.pre_host), post_host=list(m.hooks.post_host),
        pre_guest=[GuestCommand(g.vm, g.command) for g in m.hooks.pre_guest],
        post_guest=[GuestCommand(g.vm, g.command) for g in m.hooks.post_guest],
        timeout_s=m.hooks.timeout.total_seconds(),
    )
    email = None
    if m.notify.email is not None:
        e = m.notify.email
        email = EmailTarget(host=e.host, port=e.port, sender=e.sender, to=tuple(e.to),
                            starttls=e.starttls, username=e.username,
                            password_file=e.password_file, timeout=e.timeout)
    return Policy(
        name=m.name,
        description=m.description,
        members=Members(vms=tuple(m.vms), groups=tuple(m.groups), select=tuple(m.select),
                        labels=dict(m.labels)),
        schedule=schedule,
        consistency=m.consistency,
        require=m.require,
        hooks=hooks,
        retention=Retention(**m.retention.model_dump()),
        rpo=m.rpo,
        notify=NotifyConfig(on=frozenset(m.notify.on), webhooks=tuple(m.notify.webhooks),
                            webhook_timeout=m.notify.webhook_timeout, email=email),
        origin=origin,
        source=source,
    )


def _sources(text: str, lines: Mapping[KeyPath, int], count: int) -> list[str]:
    """Each policy's own TOML: from its ``[[policy]]`` line to the next one's."""
    starts = [lines.get(("policy", n), 0) for n in range(count)]
    if not all(starts) or starts != sorted(starts):
        return [""] * count  # an inline array of policies: no block of its own
    rows = text.splitlines(keepends=True)
    ends = [*starts[1:], len(rows) + 1]
    return ["".join(rows[a - 1:b - 1]).strip() + "\n" for a, b in zip(starts, ends, strict=True)]


def _syntax_problem(e: tomllib.TOMLDecodeError) -> Problem:
    text = str(e)
    line = getattr(e, "lineno", None)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if m:
        line = line or int(m.group(1))
        text = text[:m.start()] + f" (column {m.group(2)})"
    elif re.search(r"\(at end of document\)$", text):
        text = text.replace("(at end of document)", "(at the end of the file)")
    return Problem(int(line or 0), None, f"TOML syntax error: {text[0].lower()}{text[1:]}")


def check_text(text: str) -> tuple[list[Policy], list[Problem]]:
    """The policies in ``text`` and every problem found (no policies if any)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [], [_syntax_problem(e)]
    lines = key_lines(text)
    report = _Report(raw, lines)
    model: _File | None = None
    try:
        model = _File.model_validate(raw)
    except ValidationError as e:
        _pydantic_problems(report, e)
    _rule_problems(report)
    if report.problems or model is None:
        return [], sorted(set(report.problems))
    sources = _sources(text, lines, len(model.policy))
    return [
        _build(m, origin=str(lines.get(("policy", n), 0)), source=sources[n])
        for n, m in enumerate(model.policy)
    ], []


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def parse_policies(text: str, *, file: str = "policies.toml") -> list[Policy]:
    """The policies in ``text``; :class:`PolicyError` listing every problem otherwise."""
    policies, problems = check_text(text)
    if problems:
        raise PolicyError(file, _plural(len(problems), "problem"),
                          "\n".join(p.render(file) for p in problems), problems=problems)
    for p in policies:
        object.__setattr__(p, "origin", f"{file}:{p.origin}")
    return policies


def load_policies(path: Path | str) -> list[Policy]:
    """Read and check the policy file at ``path``; :class:`PolicyError` if it is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(path, "it does not exist", f"{path}: no such file",
                          problems=[Problem(0, None, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(path, "it cannot be read", f"{path}: {e}",
                          problems=[Problem(0, None, f"cannot be read ({e})")]) from None
    return parse_policies(text, file=str(path))


__all__ = [
    "EVENTS", "EmailTarget", "Members", "NotifyConfig", "Policy", "Problem", "Retention",
    "check_text", "key_lines", "load_policies", "parse_policies",
]
