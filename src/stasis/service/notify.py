"""Telling people: webhooks (a JSON POST) and email (SMTP) on failure and on RPO breach.

The job runner calls a :class:`Notifier` when a job fails and each time it checks a
policy's RPO. A failed job is told every time. An RPO breach is told once, when it
begins; while it goes on, later checks send nothing; when the RPO is met again the
breach is over (and ``recovered`` is told if the policy asks for it), so the next
breach is told again. Which policies are in breach can be handed in at start
(``breached=``) and read back (:attr:`Notifier.breached`), so a service that keeps it
in its catalog does not tell an ongoing breach again after a restart.

A delivery that fails (the listener is down, refuses, times out, answers an error) is
logged and returned as a failed :class:`Delivery`; it never raises, so a broken
webhook cannot fail a backup. Nothing here reads the clock: the Notifier is given one.

The webhook body is one JSON object::

    {"event": "failure", "policy": "nightly", "job": "j-42", "vms": ["web1"],
     "error": "...", "time": "2026-03-29T01:00:00+00:00", "message": "...",
     "rpo": null}

with ``rpo`` an object (target, age, over, in seconds; met) for ``rpo`` and
``recovered`` events, and ``drill`` an object (the drill target's status: subject,
state, last drill, measured and target RTO, age and max age, reasons) for ``drill``
events and a drill target's ``recovered``. A drill target is told like the RPO: once
when its breach begins (per policy and VM or group), again once it is met.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from stasis import __version__
from stasis.clock import Clock
from stasis.service.drill_status import DrillStatus
from stasis.service.policy import EmailTarget, NotifyConfig, Policy
from stasis.service.rpo import RpoStatus

log = logging.getLogger(__name__)

FAILURE, RPO, RECOVERED, DRILL = "failure", "rpo", "recovered", "drill"


@dataclass(frozen=True)
class Event:
    """Something to tell about one policy."""

    kind: str  # FAILURE, RPO or RECOVERED
    policy: str
    time: datetime
    job: str | None = None
    vms: tuple[str, ...] = ()
    error: str | None = None
    rpo: RpoStatus | None = None
    drill: DrillStatus | None = None

    def summary(self) -> str:
        if self.kind == FAILURE:
            return f"policy '{self.policy}': job {self.job or '?'} failed"
        if self.kind == RPO:
            return f"policy '{self.policy}': RPO breached"
        if self.kind == DRILL and self.drill is not None:
            return f"policy '{self.policy}': drill target of {self.drill.subject} breached"
        if self.drill is not None:
            return f"policy '{self.policy}': drill target of {self.drill.subject} met again"
        return f"policy '{self.policy}': RPO met again"

    def message(self) -> str:
        if self.kind == FAILURE:
            return f"{self.summary()}: {self.error or 'no reason given'}"
        if self.drill is not None:
            return f"{self.summary()}: {self.drill.describe()}"
        if self.rpo is not None:
            return f"policy '{self.policy}': {self.rpo.describe()}"
        return self.summary()

    def payload(self) -> dict[str, Any]:
        rpo = None
        if self.rpo is not None:
            rpo = {
                "met": self.rpo.met,
                "target_s": self.rpo.target.total_seconds(),
                "age_s": None if self.rpo.age is None else self.rpo.age.total_seconds(),
                "over_s": self.rpo.over.total_seconds(),
            }
        return {
            "event": self.kind, "policy": self.policy, "job": self.job,
            "vms": list(self.vms), "error": self.error, "time": self.time.isoformat(),
            "message": self.message(), "rpo": rpo,
            "drill": None if self.drill is None else self.drill.to_dict(),
        }

    def email_body(self) -> str:
        rows = [self.message(), "", f"policy: {self.policy}", f"event:  {self.kind}",
                f"time:   {self.time.isoformat()}"]
        if self.job:
            rows.append(f"job:    {self.job}")
        if self.vms:
            rows.append(f"VMs:    {', '.join(self.vms)}")
        if self.error:
            rows += ["", "error:", self.error]
        rows += ["", f"-- Stasis {__version__}"]
        return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Delivery:
    """The outcome of telling one event to one webhook or one mail server."""

    channel: str  # "webhook" or "email"
    target: str  # the webhook's scheme://host (no path: it may hold a token), or host:port
    ok: bool
    error: str | None = None


def redact_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."


def send_webhook(url: str, event: Event, *, timeout: float) -> Delivery:
    """POST the event as JSON; a non-2xx answer, a timeout or no listener is a failure."""
    target = redact_url(url)
    request = urllib.request.Request(
        url, data=json.dumps(event.payload()).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"stasis/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        return Delivery("webhook", target, False, f"HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Delivery("webhook", target, False, str(reason) or type(e).__name__)
    if not 200 <= status < 300:
        return Delivery("webhook", target, False, f"HTTP {status}")
    return Delivery("webhook", target, True)


def send_email(email: EmailTarget, event: Event) -> Delivery:
    """One plain-text message to every address of ``email.to``, through its SMTP server."""
    target = f"{email.host}:{email.port}"
    msg = EmailMessage()
    msg["Subject"] = f"[stasis] {event.summary()}"
    msg["From"] = email.sender
    msg["To"] = ", ".join(email.to)
    msg.set_content(event.email_body())
    try:
        with smtplib.SMTP(email.host, email.port,
                          timeout=email.timeout.total_seconds()) as smtp:
            if email.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if email.username:
                password = ""
                if email.password_file:
                    password = Path(email.password_file).read_text().rstrip("\r\n")
                smtp.login(email.username, password)
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError, ValueError) as e:
        return Delivery("email", target, False, str(e) or type(e).__name__)
    return Delivery("email", target, True)


def deliver(config: NotifyConfig, event: Event) -> list[Delivery]:
    """Tell ``event`` everywhere ``config`` says (if it asks for that kind); log failures."""
    if event.kind not in config.on:
        return []
    out = [send_webhook(url, event, timeout=config.webhook_timeout.total_seconds())
           for url in config.webhooks]
    if config.email is not None:
        out.append(send_email(config.email, event))
    for d in out:
        if not d.ok:
            log.warning("policy '%s': the %s notification to %s failed: %s. The %s event "
                        "was not delivered there; the job's own result is unchanged.",
                        event.policy, d.channel, d.target, d.error, event.kind)
    return out


class Notifier:
    """What the job runner calls; keeps which policies are in RPO breach."""

    def __init__(self, *, clock: Clock, breached: Iterable[str] = (),
                 send: Callable[[NotifyConfig, Event], list[Delivery]] = deliver) -> None:
        self.clock = clock
        self._breached = set(breached)
        self._send = send
        self._lock = threading.Lock()

    @property
    def breached(self) -> frozenset[str]:
        """The policies whose current RPO breach has been told."""
        with self._lock:
            return frozenset(k for k in self._breached if "\0" not in k)

    def job_failed(self, policy: Policy, *, job: str, error: str,
                   vms: Sequence[str] = ()) -> list[Delivery]:
        """Tell that ``job`` of ``policy`` failed (every failure is told)."""
        event = Event(FAILURE, policy.name, _now(self.clock), job=job, vms=tuple(vms),
                      error=error)
        return self._send(policy.notify, event)

    def rpo_checked(self, policy: Policy, status: RpoStatus, *,
                    vms: Sequence[str] = ()) -> list[Delivery]:
        """Record an RPO check; tell a breach when it begins and its end if asked."""
        with self._lock:
            was = policy.name in self._breached
            if status.breached == was:
                return []  # nothing changed: an ongoing breach is not told again
            if status.breached:
                self._breached.add(policy.name)
            else:
                self._breached.discard(policy.name)
        kind = RPO if status.breached else RECOVERED
        event = Event(kind, policy.name, _now(self.clock), vms=tuple(vms), rpo=status)
        return self._send(policy.notify, event)

    def drill_checked(self, policy: Policy, status: DrillStatus) -> list[Delivery]:
        """Record a drill target's check; tell a breach when it begins (the event
        ``drill``) and its end (``recovered``) if asked, as for the RPO."""
        key = f"{policy.name}\0drill\0{status.subject}"
        with self._lock:
            was = key in self._breached
            if status.breached == was:
                return []
            if status.breached:
                self._breached.add(key)
            else:
                self._breached.discard(key)
        event = Event(DRILL if status.breached else RECOVERED, policy.name, _now(self.clock),
                      vms=(status.subject,), drill=status)
        return self._send(policy.notify, event)

    def forget(self, policy: str) -> None:
        """Drop a policy's breach state (the policy was removed)."""
        with self._lock:
            self._breached = {k for k in self._breached
                              if k != policy and not k.startswith(f"{policy}\0")}


def _now(clock: Clock) -> datetime:
    t = clock.now()
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
