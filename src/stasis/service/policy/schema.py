"""The Pydantic models of a policy file: unknown keys forbidden, every value checked.

:data:`KNOWN_KEYS` lists the keys of each table, for the hint a misspelt key gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from stasis.service.policy.model import (
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_EVENTS,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_SMTP_TIMEOUT,
    DEFAULT_WEBHOOK_TIMEOUT,
)
from stasis.service.policy.values import (
    Address,
    Count,
    Cron,
    DurationValue,
    Event,
    Interval,
    LabelKey,
    Level,
    PolicyName,
    Port,
    RepositoryName,
    Span,
    Text,
    Url,
    VmName,
    Zone,
)
from stasis.service.retention import PERIOD_RULES


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


class _RetentionSpans(_Model):
    keep_within: Span | None = None
    min_age: Span | None = None


# The retention table: a count per rule of the retention engine's table
# (keep_last, keep_daily...), and the spans.
if TYPE_CHECKING:
    _Retention = _RetentionSpans  # mypy cannot see fields made at run time
else:
    _Retention = create_model(
        "_Retention", __base__=_RetentionSpans,
        **{rule.key: (Count, 0) for rule in PERIOD_RULES},
    )


class _Copy(_Model):
    to: RepositoryName
    cron: Cron | None = None
    every: Interval | None = None
    retention: _Retention | None = None  # None: the policy's own retention


def _copies(value: object) -> object:
    """``[policy.copy]`` (one table) reads as ``[[policy.copy]]`` with one entry."""
    return [value] if isinstance(value, dict) else value


def _drill_check(value: object) -> object:
    """A drill check as ``--check`` takes it (``KIND[@VM][~SECONDS][:ARG]``), checked."""
    from stasis.errors import UsageError
    from stasis.recovery.drill.checks import parse_check

    if isinstance(value, str):
        try:
            parse_check(value)
        except UsageError as e:
            raise PydanticCustomError("drill_check", "is not a drill check ({why})",
                                      {"why": e.message.removesuffix("; nothing was made")}
                                      ) from None
    return value


DrillCheck = Annotated[str, BeforeValidator(_drill_check)]


class _Drill(_Model):
    """A policy's recovery drill: when, how, which checks, and the targets it is held to."""

    cron: Cron | None = None
    every: Interval | None = None
    mode: Literal["restore", "instant"] = "restore"
    checks: list[DrillCheck] = []
    check_timeout: DurationValue = DEFAULT_CHECK_TIMEOUT
    network: Text | None = None
    order: list[VmName] = []
    storage: Text | None = None
    pool: Text | None = None
    rto: DurationValue | None = None
    max_age: DurationValue | None = None


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


class PolicyModel(_Model):
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
    repository: RepositoryName | None = None
    copy_: Annotated[list[_Copy], BeforeValidator(_copies)] = Field([], alias="copy")
    drill: _Drill | None = None


class FileModel(_Model):
    policy: Annotated[list[PolicyModel], Field(min_length=1)]


def _keys_of(model: type[BaseModel]) -> set[str]:
    out: set[str] = set()
    for name, f in model.model_fields.items():
        out.add(f.alias or name)
    return out


KNOWN_KEYS: dict[str, set[str]] = {
    "": {"policy"}, "policy": _keys_of(PolicyModel), "hooks": _keys_of(_Hooks),
    "retention": _keys_of(_Retention), "notify": _keys_of(_Notify), "email": _keys_of(_Email),
    "pre_guest": _keys_of(_GuestHook), "post_guest": _keys_of(_GuestHook),
    "copy": _keys_of(_Copy), "drill": _keys_of(_Drill),
}
