"""Policy files read and checked: :func:`load_policies`, :func:`parse_policies`,
:func:`check_text`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path

from pydantic import ValidationError

from stasis.errors import PolicyError
from stasis.protection.consistency import GuestCommand, Hooks
from stasis.service.policy.model import (
    CopyTarget,
    DrillConfig,
    EmailTarget,
    Members,
    NotifyConfig,
    Policy,
    Retention,
)
from stasis.service.policy.problems import Problem, Report, pydantic_problems, rule_problems
from stasis.service.policy.schema import FileModel, PolicyModel
from stasis.service.policy.toml_lines import KeyPath, key_lines
from stasis.service.schedule import make_schedule


def _build(m: PolicyModel, *, origin: str, source: str) -> Policy:
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
        retention=Retention.from_keys(m.retention.model_dump()),
        rpo=m.rpo,
        repository=m.repository,
        copies=tuple(CopyTarget(
            to=c.to,
            schedule=None if c.cron is None and c.every is None else make_schedule(
                cron=c.cron, every=c.every, timezone=m.timezone),
            retention=None if c.retention is None else Retention.from_keys(
                c.retention.model_dump()),
        ) for c in m.copy_),
        drill=None if m.drill is None else DrillConfig(
            schedule=None if m.drill.cron is None and m.drill.every is None else make_schedule(
                cron=m.drill.cron, every=m.drill.every, timezone=m.timezone),
            mode=m.drill.mode, checks=tuple(m.drill.checks),
            check_timeout=m.drill.check_timeout, network=m.drill.network,
            order=tuple(m.drill.order), storage=m.drill.storage, pool=m.drill.pool,
            rto=m.drill.rto,
            max_age=m.drill.max_age),
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


def syntax_problem(e: tomllib.TOMLDecodeError) -> Problem:
    """A TOML syntax error as a problem on its line (the config file's too)."""
    text = str(e)
    line = getattr(e, "lineno", None)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if m:
        line = line or int(m.group(1))
        text = text[:m.start()] + f" (column {m.group(2)})"
    elif re.search(r"\(at end of document\)$", text):
        text = text.replace("(at end of document)", "(at the end of the file)")
    return Problem(int(line or 0), None, f"TOML syntax error: {text[0].lower()}{text[1:]}")


def check_text(text: str, *, repositories: Collection[str] | None = None,
               default_repository: str | None = None,
               locked: Mapping[str, str] | None = None,
               immutable: Mapping[str, int] | None = None,
               ) -> tuple[list[Policy], list[Problem]]:
    """The policies in ``text`` and every problem found (no policies if any).

    With ``repositories`` (the names a service serves), a policy's ``repository``
    and its copies' destinations must be one of them; a destination must not be the
    policy's own repository (``default_repository`` when it names none) nor one of
    ``locked`` (name -> why it cannot be unlocked). At a repository of ``immutable``
    (name -> its Object Lock in seconds), a retention must keep every point at least
    as long as the lock.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [], [syntax_problem(e)]
    lines = key_lines(text)
    report = Report(raw, lines)
    model: FileModel | None = None
    try:
        model = FileModel.model_validate(raw)
    except ValidationError as e:
        pydantic_problems(report, e)
    rule_problems(report, repositories, default_repository=default_repository,
                  locked=locked, immutable=immutable)
    if report.problems or model is None:
        return [], sorted(set(report.problems))
    sources = _sources(text, lines, len(model.policy))
    return [
        _build(m, origin=str(lines.get(("policy", n), 0)), source=sources[n])
        for n, m in enumerate(model.policy)
    ], []


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def parse_policies(text: str, *, file: str = "policies.toml",
                   repositories: Collection[str] | None = None,
                   default_repository: str | None = None,
                   locked: Mapping[str, str] | None = None,
                   immutable: Mapping[str, int] | None = None) -> list[Policy]:
    """The policies in ``text``; :class:`PolicyError` listing every problem otherwise
    (``repositories``, ``default_repository``, ``locked``, ``immutable``: as
    :func:`check_text`)."""
    policies, problems = check_text(text, repositories=repositories,
                                    default_repository=default_repository, locked=locked,
                                    immutable=immutable)
    if problems:
        raise PolicyError(file, _plural(len(problems), "problem"),
                          "\n".join(p.render(file) for p in problems), problems=problems)
    for p in policies:
        object.__setattr__(p, "origin", f"{file}:{p.origin}")
    return policies


def load_policies(path: Path | str, *, repositories: Collection[str] | None = None,
                  default_repository: str | None = None,
                  locked: Mapping[str, str] | None = None,
                  immutable: Mapping[str, int] | None = None) -> list[Policy]:
    """Read and check the policy file at ``path``; :class:`PolicyError` if it is wrong
    (``repositories``, ``default_repository``, ``locked``, ``immutable``: as
    :func:`check_text`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(path, "it does not exist", f"{path}: no such file",
                          problems=[Problem(0, None, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(path, "it cannot be read", f"{path}: {e}",
                          problems=[Problem(0, None, f"cannot be read ({e})")]) from None
    return parse_policies(text, file=str(path), repositories=repositories,
                          default_repository=default_repository, locked=locked,
                          immutable=immutable)
