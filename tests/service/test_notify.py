"""Notifications against a real HTTP listener and a real SMTP listener on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from stasis.service.notify import Notifier
from stasis.service.policy import Policy, parse_policies
from stasis.service.rpo import rpo_status
from tests.clocks import ManualClock


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(  # type: ignore[attr-defined]
            {"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.received = []  # type: ignore[attr-defined]
    server.status = 204  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Mailbox]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, box
    controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy(hook_url: str, smtp_port: int, on: str = '["failure", "rpo", "recovered"]') -> Policy:
    (p,) = parse_policies(f"""
[[policy]]
name = "nightly"
vms = ["web1", "db1"]
cron = "0 2 * * *"
rpo = "26h"
[policy.notify]
on = {on}
webhooks = ["{hook_url}"]
webhook_timeout = "2s"
[policy.notify.email]
host = "127.0.0.1"
port = {smtp_port}
from = "stasis@example.com"
to = ["ops@example.com", "dba@example.com"]
timeout = "5s"
""")
    return p


START = datetime(2026, 3, 30, 12, tzinfo=UTC)


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"


def test_failure_goes_to_webhook_and_email(webhook: ThreadingHTTPServer,
                                            smtp: tuple[Controller, Mailbox]) -> None:
    controller, box = smtp
    clock = ManualClock(START)
    p = policy(url(webhook), controller.port)
    deliveries = Notifier(clock=clock).job_failed(p, job="j-42", vms=["web1", "db1"],
                                                  error="libvirt failed: no domain")
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", True), ("email", True)]
    (hit,) = webhook.received  # type: ignore[attr-defined]
    assert hit["type"] == "application/json"
    body = hit["body"]
    assert {k: body[k] for k in ("event", "policy", "job", "vms", "error", "time")} == {
        "event": "failure", "policy": "nightly", "job": "j-42", "vms": ["web1", "db1"],
        "error": "libvirt failed: no domain", "time": "2026-03-30T12:00:00+00:00"}
    ((rcpts, msg),) = box.messages
    assert rcpts == ["ops@example.com", "dba@example.com"]
    assert msg["Subject"] == "[stasis] policy 'nightly': job j-42 failed"
    assert msg["From"] == "stasis@example.com"
    text = msg.get_payload(decode=True).decode()
    assert "libvirt failed: no domain" in text and "VMs:    web1, db1" in text
    assert "secret-token" not in deliveries[0].target  # the path may be a secret


def test_rpo_breach_is_told_once_until_it_clears(webhook: ThreadingHTTPServer,
                                                 smtp: tuple[Controller, Mailbox]) -> None:
    controller, box = smtp
    clock = ManualClock(START)
    p = policy(url(webhook), controller.port)
    assert p.rpo is not None
    notifier = Notifier(clock=clock)
    newest = clock.now() - timedelta(hours=20)
    events: list[str] = []

    def check() -> None:
        before = len(webhook.received)  # type: ignore[attr-defined]
        notifier.rpo_checked(p, rpo_status(newest, clock.now(), p.rpo))
        events.extend(h["body"]["event"]
                      for h in webhook.received[before:])  # type: ignore[attr-defined]

    for _ in range(10):  # every minute for 10 minutes: met, nothing told
        check()
        clock.tick(minutes=1)
    assert events == []
    clock.set(newest + timedelta(hours=27))
    for _ in range(60):  # an hour of checks during one breach: told once
        check()
        clock.tick(minutes=1)
    assert events == ["rpo"] and notifier.breached == {"nightly"}
    newest = clock.now()  # a good point arrives: the breach is over
    check()
    check()
    assert events == ["rpo", "recovered"]
    clock.tick(hours=30)  # breaches again: told again
    check()
    check()
    assert events == ["rpo", "recovered", "rpo"]
    breach = webhook.received[0]["body"]  # type: ignore[attr-defined]
    assert breach["rpo"]["met"] is False and breach["rpo"]["target_s"] == 26 * 3600
    assert breach["rpo"]["over_s"] == 3600
    assert [m["Subject"] for _, m in box.messages] == [
        "[stasis] policy 'nightly': RPO breached", "[stasis] policy 'nightly': RPO met again",
        "[stasis] policy 'nightly': RPO breached"]
    # A restarted service handed the breach state does not tell it again.
    again = Notifier(clock=clock, breached=notifier.breached)
    assert again.rpo_checked(p, rpo_status(newest, clock.now(), p.rpo)) == []


def test_events_not_asked_for_are_not_sent(webhook: ThreadingHTTPServer,
                                           smtp: tuple[Controller, Mailbox]) -> None:
    controller, box = smtp
    p = policy(url(webhook), controller.port, on='["failure"]')
    assert p.rpo is not None
    n = Notifier(clock=ManualClock(START))
    assert n.rpo_checked(p, rpo_status(None, ManualClock(START).now(), p.rpo)) == []
    assert webhook.received == [] and box.messages == []  # type: ignore[attr-defined]


def test_down_or_failing_listeners_are_logged_not_raised(
        webhook: ThreadingHTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    p = policy(f"http://127.0.0.1:{free_port()}/hook", free_port())
    caplog.set_level(logging.WARNING, logger="stasis.service.notify")
    deliveries = Notifier(clock=ManualClock(START)).job_failed(p, job="j-1", error="boom")
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", False), ("email", False)]
    assert all(d.error for d in deliveries)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert "the webhook notification to http://127.0.0.1" in logged[0] and "failed" in logged[0]
    assert "the email notification to 127.0.0.1" in logged[1]
    webhook.status = 500  # type: ignore[attr-defined]
    p = policy(url(webhook), free_port(), on='["failure"]')
    (hook, _mail) = Notifier(clock=ManualClock(START)).job_failed(p, job="j-2", error="boom")
    assert not hook.ok and hook.error is not None and "HTTP 500" in hook.error
