"""``python -m tests.drivers.stasis [OPTIONS] -- STASIS-ARGS...``: the ``stasis`` CLI
(its own entry function, signals and exit codes included) with test parameters
injected into the production functions that take them:

- ``--window-ms N``: a group capture holds its consistency window open N ms once every
  job has begun (``fix_instant(in_window=...)``), to signal Stasis inside it;
- ``--job-hold-ms N``: each job that ``stasis serve`` runs waits N ms as its work
  begins (a cancel ends the wait at once, and the job then stops): a backup once its
  libvirt backup job has begun and before it reads, where a kill leaves the most
  debris (``Service(unit_progress=...)``);
- ``--clock-rate RATE@EPOCH``: ``stasis serve``'s clock runs RATE times as fast as the
  wall clock from the Unix time EPOCH, so that a 1m schedule comes every few seconds
  (``Catalog.open(clock=...)``);
- ``--kill-after-network``: a drill SIGKILLs itself the moment its isolated network is
  made, before it records what it made (the narrowest window a kill -9 has there).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from stasis.progress import Progress
from tests.clocks import ScaledClock

log = logging.getLogger("stasis.policy")


class JobHold:
    """A progress sink that holds the backup open until ``ms`` pass or it is cancelled."""

    def __init__(self, cancel: threading.Event, ms: int) -> None:
        self.cancel, self.ms = cancel, ms

    def start(self, description: str, total: int) -> None:
        log.info("test driver: holding %s for %d ms", description, self.ms)
        self.cancel.wait(self.ms / 1000)

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _with_default(fn: Callable[..., Any], **injected: Any) -> Callable[..., Any]:
    """``fn`` with ``injected`` keywords where a caller gives none (or None)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        for name, value in injected.items():
            if kwargs.get(name) is None:
                kwargs[name] = value
        return fn(*args, **kwargs)

    return call


def hold_window(ms: int) -> None:
    from stasis.protection import capture

    capture.fix_instant = _with_default(
        capture.fix_instant, in_window=lambda: time.sleep(ms / 1000))


def hold_jobs(ms: int) -> None:
    from stasis.service import runner

    def progress(cancel: threading.Event) -> Progress:
        return JobHold(cancel, ms)

    runner.Service.__init__ = _with_default(  # type: ignore[method-assign]
        runner.Service.__init__, unit_progress=progress)


def scale_clock(spec: str) -> None:
    from stasis.catalog import db

    rate, _, epoch = spec.partition("@")
    clock = ScaledClock(float(rate), float(epoch))
    original = db.Catalog.open.__func__  # type: ignore[attr-defined]
    db.Catalog.open = classmethod(  # type: ignore[method-assign,assignment]
        _with_default(original, clock=clock))


def kill_after_network() -> None:
    import os
    import signal

    from stasis.recovery.drill import run as drill_run

    made = drill_run.ensure_network

    def ensure_then_die(*args: Any, **kwargs: Any) -> Any:
        made(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    drill_run.ensure_network = ensure_then_die  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.drivers.stasis")
    parser.add_argument("--window-ms", type=int, default=0)
    parser.add_argument("--job-hold-ms", type=int, default=0)
    parser.add_argument("--clock-rate", default="")
    parser.add_argument("--kill-after-network", action="store_true")
    parser.add_argument("stasis", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.stasis[1:] if args.stasis[:1] == ["--"] else args.stasis
    if args.window_ms:
        hold_window(args.window_ms)
    if args.job_hold_ms:
        hold_jobs(args.job_hold_ms)
    if args.clock_rate:
        scale_clock(args.clock_rate)
    if args.kill_after_network:
        kill_after_network()
    from stasis.cli.main import run

    sys.argv = ["stasis", *rest]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
