"""Signals held over a step that must finish whole (stasis.signals.held), and the
group capture's parallel steps that rely on it: a signal that arrives while a member's
step runs (a libvirt backup job beginning) is raised only once every step has ended, so
the caller knows of every job that began and ends it on the way out."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stasis import signals
from stasis.protection import capture
from stasis.signals import Terminated


@pytest.fixture
def sigusr1_terminates() -> Iterator[None]:
    """SIGUSR1 handled as the CLI handles SIGTERM (signals.deliver(Terminated()))."""
    def handler(signum: int, frame: Any) -> None:
        signals.deliver(Terminated())

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def _signal_self() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.01)  # the handler runs in the main thread at its next bytecode


def test_a_signal_outside_a_held_block_raises_at_once(sigusr1_terminates: None) -> None:
    after: list[str] = []
    with pytest.raises(Terminated):
        _signal_self()
        after.append("went on")
    assert after == []


def test_a_signal_in_a_held_block_is_raised_when_it_ends(sigusr1_terminates: None) -> None:
    steps: list[str] = []
    with pytest.raises(Terminated):
        with signals.held():
            _signal_self()
            steps.append("finished")
        steps.append("after the block")
    assert steps == ["finished"]
    # Nothing stays pending: the next block runs and ends normally.
    with signals.held():
        steps.append("next")
    assert steps == ["finished", "next"]


def test_nested_blocks_raise_at_the_end_of_the_outermost(sigusr1_terminates: None) -> None:
    steps: list[str] = []
    with pytest.raises(Terminated), signals.held():
        with signals.held():
            _signal_self()
        steps.append("outer went on")
    assert steps == ["outer went on"]


def test_a_worker_threads_block_holds_nothing(sigusr1_terminates: None) -> None:
    """held() in a worker thread does not defer the main thread's signals."""
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with signals.held():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    try:
        inside.wait(5)
        with pytest.raises(Terminated):
            _signal_self()
    finally:
        release.set()
        t.join()


@pytest.mark.parametrize("members", [1, 3])
def test_every_members_step_ends_before_the_signal_is_raised(
    sigusr1_terminates: None, members: int
) -> None:
    """The signal arrives while the first member's step runs (in the main thread for a
    single member, in a worker for several): every step still runs to its end, and the
    caller sees the signal only then."""
    done: list[int] = []
    lock = threading.Lock()

    def step(m: int) -> None:
        if m == 0:
            _signal_self()
        time.sleep(0.05)
        with lock:
            done.append(m)

    with pytest.raises(Terminated):
        capture._parallel(step, list(range(members)))  # type: ignore[arg-type]
    assert sorted(done) == list(range(members))
