"""The crash matrix: ``stasis`` processes killed with SIGKILL at seeded random instants
during each operation that writes or reads a repository, and what must hold after
each kill. Used by tests/repository/test_crash_matrix.py (a few kills per operation)
and bench/bench_crash.py (hundreds, with the figures).

Where a kill lands (:attr:`World.placement`):

- ``time``: ``uniform(0, window)`` seconds after the process wrote its first lock,
  the window being one unkilled run's work; a short work (a gc, a prune of a small
  repository) mostly ends before the kill;
- ``call``: at the N-th storage call of the operation's kind (:data:`KILL_CALLS`: the
  puts of a backup or copy, the deletes of a prune or gc, the gets of a rebuild or
  restore), N drawn from 1 to the count of one unkilled run: ``stasis`` runs through
  :mod:`stasis_testkit.callkill`, which SIGKILLs its own process group at that call,
  so the kill lands inside the work however short it is.

The operations ``vm`` and ``group`` back up real test-kit guests (``backup vm`` of the
first, ``backup group`` of all of them) into the same repository: before each run new
random data is written in every guest's disk and its content taken as the reference
(the guests are idle otherwise). Their points are checked like the images', and after
a kill of one of them, besides:

- no guest stays paused, and no guest agent stays frozen (the guardian resumes and
  thaws them within seconds);
- the next backup, run at once, is incremental on every disk and restores equal to
  the guest's disk; after it no libvirt job is left on any guest, every checkpoint of
  the repository's chain belongs to a committed point, and no job directory (NBD
  socket, scratch file) is left in the scratch or run directory. A kill -9 cannot end
  the libvirt job it began: that debris is the next backup's to remove (doctor's too).

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

import hashlib
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
from typing import Any

import libvirt

from stasis.backends import open_backend
from stasis.hypervisor import libvirt_api as lv
from stasis.protection.verify import verify
from stasis.recovery.restore import restore_disk
from stasis.repository import Credentials, Repository
from stasis.repository.locks import LockManager
from stasis_testkit.guest import Guest

PASSPHRASE = "the crash matrix's passphrase"
DEST_PASSPHRASE = "the crash matrix's second site"
OPERATIONS = ("backup", "copy", "prune", "gc", "catalog-rebuild", "restore")
VM_OPERATIONS = ("vm", "group")  # need guests (World.guests)
ALL_OPERATIONS = OPERATIONS + VM_OPERATIONS
PLACEMENTS = ("time", "call")
# The storage calls a kill by call is placed among: (call kinds, key prefix).
KILL_CALLS: dict[str, tuple[str, str]] = {
    "backup": ("put", ""), "copy": ("put", ""), "prune": ("delete", ""),
    "gc": ("delete", ""), "catalog-rebuild": ("get", "manifests/"),
    "restore": ("get", "chunks/"), "vm": ("put", ""), "group": ("put", ""),
}
GUEST_DISK = "vda"
GUARDIAN_S = 10.0  # a guest paused by a killed backup runs again within this
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
    placement: str = "time"
    at_call: int | None = None  # placement "call": killed at this storage call
    rerun_calls: int | None = None  # placement "call": the calls the run again made
    vm_debris: int = 0  # libvirt jobs, uncommitted checkpoints, job directories it left


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
    changed_mib: int = 16  # new random data per guest before each VM backup
    placement: str = "time"
    guests: list[Guest] = field(default_factory=list)  # for the VM operations
    # point id -> (VM, disk) -> digest of the guest's disk when it was backed up
    vm_points: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)
    # a VM backup under way: the point ids before it, and its references
    _pending: tuple[set[str], dict[tuple[str, str], str]] | None = None

    @classmethod
    def make(cls, root: Path, url: str, dest_url: str, *, stasis: str | None = None,
             env: dict[str, str] | None = None, chunk_size: int = 256 << 10,
             image_mib: int = 16, placement: str = "time",
             guests: list[Guest] | None = None, changed_mib: int = 16,
             image_points: int = 3) -> World:
        from stasis.repository import crypto

        cheap = crypto.KdfParams(memory_kib=1024, iterations=1)
        for where, secret in ((url, PASSPHRASE), (dest_url, DEST_PASSPHRASE)):
            Repository.init(open_backend(where), passphrase=secret.encode(),
                            chunk_size=chunk_size, kdf=cheap)
        base = {k: v for k, v in (env or os.environ).items() if not k.startswith("STASIS_")}
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r} (placements: {PLACEMENTS})")
        scratch = root / "scratch"  # QEMU (its own user) reaches it for the job's socket
        scratch.mkdir(mode=0o711, exist_ok=True)
        scratch.chmod(0o711)
        kit_src = str(Path(__file__).resolve().parents[1])  # callkill runs from here
        base.update(STASIS_REPO=url, STASIS_PASSPHRASE=PASSPHRASE,
                    STASIS_TO_PASSPHRASE=DEST_PASSPHRASE, STASIS_SCRATCH_DIR=str(scratch),
                    STASIS_STATE_DIR=str(root / "state"), COLUMNS="200",
                    PYTHONPATH=os.pathsep.join(p for p in (kit_src, base.get("PYTHONPATH"))
                                               if p))
        exe = stasis or str(Path(sys.executable).parent / "stasis")
        world = cls(root, url, dest_url, exe, base, image_mib=image_mib,
                    changed_mib=changed_mib, placement=placement, guests=list(guests or []))
        for _ in range(image_points):  # something to copy, prune and restore from the start
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
            self.run(self.argv("backup"))  # something new to copy, every round
            return ["copy", "--to", self.dest_url, "--all", "--json"]
        if operation == "prune":
            self.run(self.argv("backup"))  # one more point, so one can go
            return ["prune", "--keep-last", "3", "--json"]
        if operation == "gc":  # garbage to collect: the unique half of a pruned point
            self.run(self.argv("backup"))
            self.run(["prune", "--keep-last", "2"])
            return ["gc", "--json"]
        if operation == "catalog-rebuild":
            return ["catalog", "rebuild", "--json"]
        if operation in VM_OPERATIONS:
            members = self._members(operation)
            self._pending = (set(self._repo().point_ids()), self._change(members))
            if operation == "vm":
                return ["backup", "vm", members[0].name, "--json"]
            return ["backup", "group", "app", *[a for g in members for a in ("--vm", g.name)],
                    "--json"]
        if operation == "restore":
            newest = self._repo().points()[-1]
            target = self.root / "restored.raw"
            target.unlink(missing_ok=True)
            return ["restore", "disk", newest.id, "--to", str(target)]
        raise ValueError(f"unknown operation {operation!r}")

    def _members(self, operation: str) -> list[Guest]:
        if not self.guests:
            raise ValueError(f"the operation {operation!r} needs guests (World.make(guests=))")
        return self.guests[:1] if operation == "vm" else self.guests

    def _change(self, members: list[Guest]) -> dict[tuple[str, str], str]:
        """New random data in each member's disk (a seeded place), then its content: the
        reference a point made now must restore to."""
        refs = {}
        for g in members:
            size = g.domain.blockInfo(GUEST_DISK)[0]
            at = random.Random(self.rounds).randrange(0, size // MiB - self.changed_mib)
            self.rounds += 1
            g.run(f"dd if=/dev/urandom of=/dev/{GUEST_DISK} bs=1M seek={at} "
                  f"count={self.changed_mib} conv=notrunc,fsync 2>/dev/null", check=True,
                  timeout=120)
            refs[(g.name, GUEST_DISK)] = _guest_digest(g, self.root)
        return refs

    def _adopt(self) -> list[str]:
        """After a VM backup ended (or was killed): the point it committed, if any, gets
        the references taken before it. Answers the new point ids."""
        if self._pending is None:
            return []
        before, refs = self._pending
        self._pending = None
        new = [pid for pid in self._repo().point_ids() if pid not in before]
        for pid in new:
            self.vm_points[pid] = refs
        return new

    def run(self, args: list[str], timeout: float = 300, *,
            counted: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``stasis args``, which must succeed; with ``counted``, through callkill, which
        writes there how many storage calls of the operation's kind it made."""
        argv = [self.stasis, *args] if counted is None else \
            self._callkill(_operation_of(args), args, count_to=counted)
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        self._adopt()
        if proc.returncode != 0:
            raise AssertionError(f"stasis {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr[-2000:]}")
        return proc

    def kill_during(self, operation: str, round_: int, rng: random.Random,
                    window: float) -> Kill:
        """Run ``operation`` and SIGKILL it inside its work: placement ``time``,
        ``uniform(0, window)`` seconds after its work began (its lock appeared: the
        start-up before it touches nothing); placement ``call``, at a storage call drawn
        from 1 to ``window`` (the calls of one unkilled run)."""
        args = self.argv(operation)
        before = self._leftovers()
        at_call = None
        if self.placement == "call":
            at_call = rng.randint(1, max(1, int(window)))
            began = time.monotonic()
            proc = subprocess.Popen(self._callkill(operation, args, at=at_call), env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            _out, err = proc.communicate(timeout=300)
            delay = time.monotonic() - began
            finished = proc.returncode != -signal.SIGKILL
        else:
            delay = rng.uniform(0.0, window)
            proc = subprocess.Popen([self.stasis, *args], env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            self._work_began(proc)
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)  # the process and anything it started
            _out, err = proc.communicate(timeout=60)
        self._adopt()
        if finished and proc.returncode != 0:
            raise AssertionError(f"stasis {' '.join(args)} failed before the kill "
                                 f"({proc.returncode}): {err[-2000:]}")
        left = self._leftovers() - before
        if operation == "restore":
            left |= self._restore_partials(args)
        debris = 0
        if operation in VM_OPERATIONS:
            self._check_guests_run(operation)
            left_by_kill = self._vm_debris()
            debris = len(left_by_kill)
            self._check_doctor_sees(operation, left_by_kill)
        self.check(operation)
        began = time.monotonic()
        rerun = self.argv(operation) if operation != "restore" else args
        # At once: no lock of the killed process holds it back. By call, its calls are
        # counted (reported: a run again after a killed gc has its garbage too).
        counted = self.root / "calls.json" if self.placement == "call" else None
        out = self.run(rerun, counted=counted)
        rerun_s = time.monotonic() - began
        if operation == "restore":
            self._check_restored(args)
        if operation in VM_OPERATIONS:
            self._check_next_backup(operation, json.loads(out.stdout))
        return Kill(operation, round_, round(delay, 3), finished,
                    proc.returncode if finished else None, len(left), round(rerun_s, 3),
                    self.placement, at_call,
                    json.loads(counted.read_text())["calls"] if counted else None, debris)

    def _callkill(self, operation: str, args: list[str], *, at: int | None = None,
                  count_to: Path | None = None) -> list[str]:
        """``stasis args`` run through :mod:`stasis_testkit.callkill`."""
        calls, prefix = KILL_CALLS[operation]
        return [sys.executable, "-m", "stasis_testkit.callkill", "--calls", calls,
                "--prefix", prefix,
                *(["--at", str(at)] if at is not None else []),
                *(["--count-to", str(count_to)] if count_to is not None else []),
                "--", *args]

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
                if point.id in self.vm_points:
                    self._check_vm_point(repo, point.id, operation)
                    continue
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

    def _check_vm_point(self, repo: Repository, point_id: str, operation: str) -> None:
        """Every disk of a VM or group point restores to the guest's disk as it was."""
        point = repo.load_manifest(point_id)
        refs = self.vm_points[point_id]
        assert {(vm.name, d.name) for vm in point.vms for d in vm.disks} == set(refs), \
            (operation, point_id)
        for (vm, disk), digest in refs.items():
            target = self.root / f"check-{point_id[:12]}-{vm}-{disk}.raw"
            restore_disk(repo, point, target=target, vm=vm, disk=disk, fmt="raw")
            got = _digest(target)
            target.unlink()
            assert got == digest, (operation, point_id, vm, disk, "restores other bytes")

    def _check_guests_run(self, operation: str) -> None:
        """After a kill: every guest runs again (not paused) and none is left frozen."""
        deadline = time.monotonic() + GUARDIAN_S
        for g in self.guests:
            while g.domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                assert time.monotonic() < deadline, (operation, g.name, "stayed paused")
                time.sleep(0.05)
            assert g.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING, (operation, g.name)
            if g.has_agent:
                while (status := g.agent_command({"execute": "guest-fsfreeze-status"})) \
                        != "thawed":
                    assert time.monotonic() < deadline, (operation, g.name, status)
                    time.sleep(0.05)

    def _check_next_backup(self, operation: str, point: dict[str, Any]) -> None:
        """The backup after a kill: incremental on every disk, equal to the guests'
        disks, and nothing of the killed one left on the hypervisor or the host."""
        for vm in point["vms"]:
            for disk in vm["disks"]:
                assert disk["mode"] == "incremental", (operation, vm["name"], disk)
        self._check_vm_point(self._repo(), point["id"], operation)
        left = self._vm_debris()
        assert not left, (operation, "left after the next backup", left)

    def _check_doctor_sees(self, operation: str, debris: list[str]) -> None:
        """``stasis doctor`` (without --fix: the next backup removes it) names every
        kind of what the killed backup left on the hypervisor and the host."""
        found = json.loads(self.run(["doctor", "--json"]).stdout)
        kinds = {f["kind"] for f in found}
        for what, kind in ((": libvirt job", "libvirt job"), (": checkpoint ", "checkpoint"),
                           (lv.JOB_DIR_PREFIX, "scratch")):
            if any(what in d for d in debris):
                assert kind in kinds, (operation, "doctor missed", kind, debris, found)

    def _vm_debris(self) -> list[str]:
        """What a VM backup left on the hypervisor and the host: the guests' libvirt
        jobs, checkpoints of the repository's chain whose point did not commit, job
        directories (an NBD socket, scratch files) in the scratch and run directories."""
        repo = self._repo()
        committed = {pid[:12] for pid in repo.point_ids()}
        chain = lv.chain_prefix(repo.id)
        found = []
        for g in self.guests:
            if _job_running(g.domain):
                found.append(f"{g.name}: libvirt job")
            found += [f"{g.name}: checkpoint {c.name}" for c in lv.checkpoints(g.domain, chain)
                      if c.point_prefix() not in committed]
        for where in (Path(self.env["STASIS_SCRATCH_DIR"]),
                      Path(self.env["STASIS_STATE_DIR"]) / "run"):
            found += [str(p) for p in where.glob(f"{lv.JOB_DIR_PREFIX}*")]
        return found

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


def _operation_of(args: list[str]) -> str:
    """The crash matrix's name of the operation a command line runs."""
    if args[:2] == ["catalog", "rebuild"]:
        return "catalog-rebuild"
    if args[0] == "backup":
        return {"image": "backup", "vm": "vm", "group": "group"}[args[1]]
    return args[0]


def _digest(path: Path) -> str:
    """A disk's content as one value: its size and the hash of its bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return f"{path.stat().st_size}:{h.hexdigest()}"


def _guest_digest(g: Guest, scratch: Path) -> str:
    """The digest of a running guest's disk, read from its image (the guest idle, its
    writes flushed)."""
    disk = g.disks[GUEST_DISK]
    raw = scratch / f"ref-{g.name}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", str(disk.fmt), "-O", "raw",
                    str(disk.path), str(raw)], check=True, capture_output=True)
    try:
        return _digest(raw)
    finally:
        raw.unlink()


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
    """The kill window of ``operation``, from one unkilled run: placement ``time``, how
    long its work takes here, from its first lock to its end; placement ``call``, how
    many storage calls of its kind (:data:`KILL_CALLS`) it makes."""
    if operation in VM_OPERATIONS and not world.vm_points:
        world.run(world.argv(operation))  # the first is full: a window of incrementals
    if world.placement == "call":  # twice: the first run may find more (a first gc)
        counted = world.root / "calls.json"
        for _ in range(2):
            world.run(world.argv(operation), counted=counted)
        return float(json.loads(counted.read_text())["calls"])
    args = world.argv(operation)
    proc = subprocess.Popen([world.stasis, *args], env=world.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    world._work_began(proc)
    working = time.monotonic()
    _out, err = proc.communicate(timeout=300)
    world._adopt()
    if proc.returncode != 0:
        raise AssertionError(f"stasis {' '.join(args)} failed ({proc.returncode}): {err}")
    return max(time.monotonic() - working, 0.05 * (working - began), 0.01)


def matrix(world: World, operations: tuple[str, ...], kills: int, seed: int,
           on_kill: Callable[[Kill], None] | None = None) -> list[Kill]:
    """``kills`` SIGKILLs per operation, at seeded instants within a calibrated window."""
    rng = random.Random(seed)
    done: list[Kill] = []
    for operation in operations:
        window = calibrate(world, operation)
        if world.placement == "time":
            window *= 1.1
        for k in range(kills):
            kill = world.kill_during(operation, k, rng, window)
            done.append(kill)
            if on_kill is not None:
                on_kill(kill)
    return done


def _job_running(dom: Any, patience: float = 10.0) -> bool:
    """Whether ``dom`` has a libvirt job. Right after a kill, libvirt may still be in
    the killed process's backupBegin and answer "backup job data missing": asked again
    until it can tell (as the product's own job checks do)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return bool(dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)
        except libvirt.libvirtError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
