"""The clock module, the test clocks, and that production holds no test hook."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stasis.clock import SYSTEM_CLOCK, Clock
from tests.clocks import ManualClock, ScaledClock

SRC = Path(__file__).resolve().parents[1] / "src" / "stasis"


def test_the_system_clock_is_aware_utc_and_monotonic() -> None:
    now = SYSTEM_CLOCK.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    a = SYSTEM_CLOCK.monotonic()
    SYSTEM_CLOCK.sleep(0.01)
    assert SYSTEM_CLOCK.monotonic() - a >= 0.01


def test_the_manual_clock_moves_only_when_told() -> None:
    start = datetime(2025, 3, 1, 12, tzinfo=UTC)
    clock: Clock = ManualClock(start)
    assert clock.now() == start and clock.monotonic() == 0.0
    clock.sleep(90)  # no wait: the clock moves instead
    assert clock.now() == start + timedelta(seconds=90) and clock.monotonic() == 90.0
    manual = ManualClock(start)
    manual.tick(hours=1)
    manual.set(start)  # wall time goes back, the monotonic count does not
    assert manual.now() == start and manual.monotonic() == 3600.0


def test_the_scaled_clock_runs_fast_from_its_epoch() -> None:
    epoch = SYSTEM_CLOCK.now().timestamp()
    clock = ScaledClock(1000, epoch)
    before = clock.now()
    SYSTEM_CLOCK.sleep(0.05)
    assert clock.now() - before >= timedelta(seconds=40)


def test_production_reads_no_environment_variable_meant_for_tests() -> None:
    hooks = re.compile(r"STASIS_TEST_|STASIS_KDF|stasis_testkit|stasis\.testkit")
    found = [f"{p.relative_to(SRC)}: {m.group(0)}" for p in SRC.rglob("*.py")
             for m in hooks.finditer(p.read_text())]
    assert found == []
