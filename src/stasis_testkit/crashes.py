"""The crash matrix: ``stasis`` processes killed with SIGKILL at seeded random instants
during each operation that writes or reads a repository, and what must hold after
each kill. Used by tests/repository/test_crash_matrix.py (a few kills per operation)
and bench/bench_crash.py (hundreds, with the figures).

A :class:`World` is one repository (a directory or an S3 URL), a second one for copies,
a state directory and the images each point was made from: all points are one chain
(one name, so that prune has something to remove) and each image has a file name of its
own, which is the point's disk name, so whatever a killed backup or copy committed can
be checked bit for bit.

After every kill (:meth:`World.check`), read by a fresh process's view:

- a deep verify of the repository (and of the copy's destination) is clean;
- every committed point restores bit-exactly to the image it was made from;
- no lock of a live holder is left (the killed process's lock is stale: its pid is
  gone), and the same operation, run again at once, succeeds;
- a killed restore left no target that looks complete (it is absent or whole);
- the catalog still answers, and a rebuild lists exactly the repository's points.

What a kill leaves that is allowed (temporary files of puts in flight, which gc and
doctor remove once an hour old; a restore's partial file) is counted, not failed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stasis.backends import open_backend
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Repository
from stasis.repository.locks import LockManager

PASSPHRASE = "the crash matrix's passphrase"
DEST_PASSPHRASE = "the crash matrix's second site"
OPERATIONS = ("backup", "copy", "prune", "gc", "catalog-rebuild", "restore")
MiB = 1 << 20


@dataclass
class Kill:
    operation: str
    round: int
    delay_s: float  # after its work began (its first repository lock was written)
    finished: bool  # it ended before the kill (the kill came too late)
    exit_code: int | None
    leftovers: int  # temporary files it left (allowed)
    rerun_s: float  # the same operation run again at once, until done


@dataclass
class World:
    root: Path  # scratch: images, state, restore targets
    url: str  # the repository
    dest_url: str  # the second site, for copies
    stasis: str  # the ``stasis`` executable
    env: dict[str, str]
    images: dict[str, Path] = field(default_factory=dict)  # disk name -> image
    rounds: int = 0
    image_mib: int = 16  # each image: a quarter shared by all, half its own, the rest a hole

    @classmethod
    def make(cls, root: Path, url: str, dest_url: str, *, stasis: str | None = None,
             env: dict[str, str] | None = None, chunk_size: int = 256 << 10,
             image_mib: int = 16) -> World:
        from stasis.repository import crypto

        cheap = crypto.KdfParams(memory_kib=1024, iterations=1)
        for where, secret in ((url, PASSPHRASE), (dest_url, DEST_PASSPHRASE)):
            Repository.init(open_backend(where), passphrase=secret.encode(),
                            chunk_size=chunk_size, kdf=cheap)
        base = {k: v for k, v in (env or os.environ).items() if not k.startswith("STASIS_")}
        base.update(STASIS_REPO=url, STASIS_PASSPHRASE=PASSPHRASE,
                    STASIS_TO_PASSPHRASE=DEST_PASSPHRASE,
                    STASIS_STATE_DIR=str(root / "state"), COLUMNS="200")
        exe = stasis or str(Path(sys.executable).parent / "stasis")
        world = cls(root, url, dest_url, exe, base, image_mib=image_mib)
        for _ in range(3):  # something to copy, prune and restore from the start
            world.run(world.argv("backup"))
        return world

    # ------------------------------------------------------------ operations

    def new_image(self) -> Path:
        """An image of its own for the next backup: part shared with the previous one
        (dedup), part new, so that gc finds garbage once points are pruned."""
        self.rounds += 1
        rnd = random.Random(self.rounds)
        path = self.root / f"img-{self.rounds:04d}.raw"
        quarter = self.image_mib * MiB // 4
        with open(path, "wb") as f:
            f.write(random.Random(0).randbytes(quarter))  # the same in every image
            f.write(rnd.randbytes(2 * quarter))
            f.truncate(4 * quarter)
        return path

    def argv(self, operation: str) -> list[str]:
        """The command line of ``operation``'s next run (preparing what it needs)."""
        if operation == "backup":
            image = self.new_image()
            self.images[image.name] = image
            return ["backup", "image", str(image), "--name", "web", "--json"]
        if operation == "copy":
            return ["copy", "--to", self.dest_url, "--all", "--json"]
        if operation == "prune":
            self.run(self.argv("backup"))  # one more point, so one can go
            return ["prune", "--keep-last", "3", "--json"]
        if operation == "gc":
            self.run(["prune", "--keep-last", "2"])  # garbage to collect
            return ["gc", "--json"]
        if operation == "catalog-rebuild":
            return ["catalog", "rebuild", "--json"]
        if operation == "restore":
            newest = self._repo().points()[-1]
            target = self.root / "restored.raw"
            target.unlink(missing_ok=True)
            return ["restore", "disk", newest.id, "--to", str(target)]
        raise ValueError(f"unknown operation {operation!r}")

    def run(self, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.stasis, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"stasis {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr[-2000:]}")
        return proc

    def kill_during(self, operation: str, round_: int, rng: random.Random,
                    window_s: float) -> Kill:
        """Run ``operation`` and SIGKILL it ``uniform(0, window_s)`` after its work
        began (its lock appeared: the start-up before it touches nothing)."""
        args = self.argv(operation)
        before = self._leftovers()
        delay = rng.uniform(0.0, window_s)
        proc = subprocess.Popen([self.stasis, *args], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._work_began(proc)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)  # the process and anything it started
        _out, err = proc.communicate(timeout=60)
        if finished and proc.returncode != 0:
            raise AssertionError(f"stasis {' '.join(args)} failed before the kill "
                                 f"({proc.returncode}): {err[-2000:]}")
        left = self._leftovers() - before
        if operation == "restore":
            left |= self._restore_partials(args)
        self.check(operation)
        began = time.monotonic()
        rerun = self.argv(operation) if operation != "restore" else args
        self.run(rerun)  # at once: no lock of the killed process holds it back
        rerun_s = time.monotonic() - began
        if operation == "restore":
            self._check_restored(args)
        return Kill(operation, round_, round(delay, 3), finished,
                    proc.returncode if finished else None, len(left), round(rerun_s, 3))

    def _locks(self) -> int:
        return sum(1 for url in (self.url, self.dest_url)
                   for _ in open_backend(url).list("locks/"))

    def _work_began(self, proc: subprocess.Popen[str], timeout: float = 60) -> float:
        """Wait until ``proc`` holds a lock (or ended); answer the seconds it took."""
        began = time.monotonic()
        while proc.poll() is None and not self._locks():
            if time.monotonic() - began > timeout:
                break
            time.sleep(0.005)
        return time.monotonic() - began

    # ------------------------------------------------------------ invariants

    def _repo(self, dest: bool = False) -> Repository:
        url, secret = (self.dest_url, DEST_PASSPHRASE) if dest else (self.url, PASSPHRASE)
        return Repository.open(open_backend(url), Credentials(passphrase=secret.encode()))

    def _leftovers(self) -> set[str]:
        found = {f"src:{lo.name}" for lo in open_backend(self.url).leftovers()}
        found |= {f"dst:{lo.name}" for lo in open_backend(self.dest_url).leftovers()}
        return found

    def check(self, operation: str) -> None:
        """Every invariant of the module's docstring, after a kill of ``operation``."""
        for dest in (False, True):
            repo = self._repo(dest)
            report = verify(repo, deep=True)
            assert report.ok, (operation, dest, [p.describe() for p in report.problems[:3]])
            for point in repo.points():
                target = self.root / f"check-{point.id[:12]}.raw"
                restore_disk(repo, point, target=target)
                disk = point.vms[0].disks[0].name
                assert _same(target, self.images[disk]), (operation, point.id, disk)
                target.unlink()
            live = [lk for lk in LockManager(open_backend(repo.url)).locks()
                    if not LockManager(open_backend(repo.url)).is_stale(lk)]
            assert not live, (operation, [lk.describe() for lk in live])
        rebuilt = json.loads(self.run(["catalog", "rebuild", "--json"]).stdout)
        listed = json.loads(self.run(["list", "--json"]).stdout)
        assert sorted(p["id"] for p in listed) == sorted(self._repo().point_ids()), rebuilt

    def _restore_partials(self, args: list[str]) -> set[str]:
        """After a killed restore: its target is absent or whole (then removed, so the
        restore can run again); its partial files are removed and counted."""
        target = Path(args[args.index("--to") + 1])
        if target.exists():
            self._check_restored(args)
            target.unlink()
        partials = set(target.parent.glob(f".{target.name}.stasis-partial-*"))
        for p in partials:
            p.unlink()
        return {f"restore:{p.name}" for p in partials}

    def _check_restored(self, args: list[str]) -> None:
        target = Path(args[args.index("--to") + 1])
        point = self._repo().load_manifest(args[2])
        assert _same(target, self.images[point.vms[0].disks[0].name]), "the restore is not whole"


def _same(a: Path, b: Path) -> bool:
    """Equal as disks: the same bytes, holes and zeros alike, the same size."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                return False
            if not x:
                return True


def calibrate(world: World, operation: str) -> float:
    """How long the work of one unkilled run of ``operation`` takes here, from its
    first lock to its end: the kill window."""
    args = world.argv(operation)
    proc = subprocess.Popen([world.stasis, *args], env=world.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    world._work_began(proc)
    working = time.monotonic()
    _out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"stasis {' '.join(args)} failed ({proc.returncode}): {err}")
    return max(time.monotonic() - working, 0.05 * (working - began), 0.01)


def matrix(world: World, operations: tuple[str, ...], kills: int, seed: int,
           on_kill: Callable[[Kill], None] | None = None) -> list[Kill]:
    """``kills`` SIGKILLs per operation, at seeded instants within a calibrated window."""
    rng = random.Random(seed)
    done: list[Kill] = []
    for operation in operations:
        window = 1.1 * calibrate(world, operation)
        for k in range(kills):
            kill = world.kill_during(operation, k, rng, window)
            done.append(kill)
            if on_kill is not None:
                on_kill(kill)
    return done
