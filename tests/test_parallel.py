"""The thread primitives: an ordered map, and background tasks with a bounded depth
whose first failure reaches the caller."""

from __future__ import annotations

import threading
import time

import pytest

from stasis.parallel import Background, Cancelled, ordered_map


def test_ordered_map_keeps_the_order_of_the_items() -> None:
    assert [r for _i, r in ordered_map(lambda x: x * x, range(50), workers=4)] == [
        x * x for x in range(50)]


def test_background_never_holds_more_than_its_depth() -> None:
    release = threading.Event()
    lock = threading.Lock()
    pending, most = [0], [0]
    submitted = []

    def task() -> None:
        release.wait()
        with lock:
            pending[0] -= 1

    def feed(writes: Background) -> None:
        for n in range(20):
            with lock:
                pending[0] += 1
                most[0] = max(most[0], pending[0])
            writes.submit(task)
            submitted.append(n)

    with Background(workers=2, depth=3) as writes:
        feeder = threading.Thread(target=feed, args=(writes,))
        feeder.start()
        while most[0] < 4:  # the fourth task is being submitted
            time.sleep(0.01)
        feeder.join(0.2)
        # It blocks in submit: three are pending (two running, one queued).
        assert feeder.is_alive() and len(submitted) == 3
        release.set()
        feeder.join()
        writes.join()
    assert len(submitted) == 20 and pending[0] == 0


def test_the_first_failure_is_raised_in_the_caller_as_the_same_object() -> None:
    boom = OSError(28, "No space left on device")
    ran: list[int] = []

    def fail() -> None:
        raise boom

    with Background(workers=1, depth=2) as writes:
        writes.submit(lambda: ran.append(1))
        writes.submit(fail)
        with pytest.raises(OSError) as e:
            writes.join()
        assert e.value is boom
        with pytest.raises(OSError) as again:  # nothing more is accepted
            writes.submit(lambda: ran.append(2))
        assert again.value is boom
    assert ran == [1]


def test_tasks_not_started_are_dropped_after_a_failure() -> None:
    gate = threading.Event()
    ran: list[int] = []

    def fail() -> None:
        gate.wait()
        raise RuntimeError("put failed")

    with Background(workers=1, depth=10) as writes:
        writes.submit(fail)
        for n in range(5):
            writes.submit(lambda n=n: ran.append(n))  # type: ignore[misc]
        gate.set()
        with pytest.raises(RuntimeError, match="put failed"):
            writes.join()
    assert ran == []


def test_close_drops_what_was_not_started_and_waits_for_what_runs() -> None:
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow() -> None:
        started.set()
        release.wait()
        done.append("slow")

    writes = Background(workers=1, depth=5)
    writes.submit(slow)
    writes.submit(lambda: done.append("queued"))
    started.wait()
    threading.Timer(0.1, release.set).start()
    writes.close()
    assert done == ["slow"]  # the running one finished before close returned
    with pytest.raises(Cancelled):
        writes.submit(lambda: done.append("late"))
