"""Many ``stasis`` processes on one repository at once, as several hosts would run them:
backups, copies to a second site, prunes and gcs, each a process of its own, in loops,
for a number of rounds; optionally with the store cut off (a network partition: the S3
server stopped) for a while during the run. Afterwards the invariants of
:mod:`stasis_testkit.crashes` are checked (both sites verify deep, every committed
point restores bit-exactly to the image it was made from, no live lock, the catalog
rebuilds to exactly the repository's points). Used by tests/repository/test_stress.py
(a few rounds) and bench/bench_stress.py (thousands).

A process may fail only as the situation allows: gc refused because another gc holds
the exclusive lock (exit 20) or it waited too long, and, while the store is cut off,
the store's errors (21, 44). Any other exit code, or any of those outside a partition
where they make no sense, fails the run.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from stasis_testkit.crashes import World

LOCKED = 20
STORE_ERRORS = (21, 44)  # the storage failed / cannot be reached
ROLES = ("backup", "copy", "prune", "gc")


@dataclass
class Outcome:
    rounds: int = 0
    runs: Counter[str] = field(default_factory=Counter)  # "backup ok", "gc 20", ...
    unexpected: list[str] = field(default_factory=list)
    partitions: int = 0
    partition_s: float = 0.0
    duration_s: float = 0.0


class Stress:
    """``workers`` threads, each running one role's process after another."""

    def __init__(self, world: World, *, workers: tuple[str, ...] = ROLES, rounds: int = 10,
                 seed: int = 0) -> None:
        self.world = world
        self.workers = workers
        self.rounds = rounds
        self.rng = random.Random(seed)
        self.outcome = Outcome()
        self.cuts: list[tuple[float, float]] = []  # (from, to) of each cut, monotonic
        self._cut_from: float | None = None
        self._lock = threading.Lock()

    def _args(self, role: str) -> list[str]:
        with self._lock:  # World's image counter and map are not thread-safe
            if role == "backup":
                return self.world.argv("backup")
        if role == "copy":
            return ["copy", "--to", self.world.dest_url, "--all"]
        if role == "prune":
            return ["prune", "--keep-last", "3"]
        return ["gc", "--wait", "30"]

    def _met_a_cut(self, began: float, ended: float) -> bool:
        """Whether a run from ``began`` to ``ended`` overlapped a cut (or one going on)."""
        with self._lock:
            spans = [*self.cuts, *([(self._cut_from, ended)] if self._cut_from else [])]
        return any(began <= to and ended >= frm for frm, to in spans)

    def _allowed(self, role: str, code: int, during_cut: bool) -> bool:
        if code == 0:
            return True
        if role == "gc" and code == LOCKED:
            return True  # another gc, or a long backup, held it off
        return during_cut and code in STORE_ERRORS

    def _worker(self, role: str, rounds: int) -> None:
        for _ in range(rounds):
            args = self._args(role)
            began = time.monotonic()
            proc = subprocess.run([self.world.stasis, *args], env=self.world.env,
                                  capture_output=True, text=True, timeout=600)
            during_cut = self._met_a_cut(began, time.monotonic())
            with self._lock:
                result = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
                self.outcome.runs[f"{role} {result}"] += 1
                if not self._allowed(role, proc.returncode, during_cut):
                    self.outcome.unexpected.append(
                        f"{role} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
            time.sleep(self.rng.uniform(0, 0.2))

    def run(self, partition: Callable[[], None] | None = None,
            heal: Callable[[], None] | None = None, cut_s: float = 3.0) -> Outcome:
        """Run the workers; with ``partition``/``heal``, cut the store off once, a third
        of the way through, for ``cut_s`` seconds."""
        began = time.monotonic()
        threads = [threading.Thread(target=self._worker, args=(role, self.rounds),
                                    name=f"stress-{role}", daemon=True)
                   for role in self.workers]
        for t in threads:
            t.start()
        if partition is not None and heal is not None:
            time.sleep(self.rng.uniform(2.0, 6.0))
            with self._lock:
                self._cut_from = time.monotonic()
            partition()
            time.sleep(cut_s)
            heal()
            with self._lock:
                assert self._cut_from is not None
                self.cuts.append((self._cut_from, time.monotonic()))
                self._cut_from = None
            self.outcome.partition_s = round(self.cuts[-1][1] - self.cuts[-1][0], 2)
            self.outcome.partitions += 1
        for t in threads:
            t.join()
        self.outcome.rounds = self.rounds
        self.outcome.duration_s = round(time.monotonic() - began, 1)
        # The images a backup made but did not commit stay in the map: check() only
        # looks up the committed points' images.
        self.world.check("stress")
        return self.outcome
