"""The sequential-log workload: known writes that date a disk's content to one instant.

In the guest, :data:`SEQLOG_SCRIPT` writes 4 KiB blocks with sequence numbers
0, 1, 2, … one after another. Write ``seq`` goes to target ``seq % T`` of the
``T`` targets (a region of a disk), at block ``(seq // T) % M`` of that target's
``M`` blocks, so the log wraps around. Every write is flushed (``dd conv=fsync``)
before the next one starts, so at any instant the disks hold exactly the state
after the first ``N`` writes, for some ``N``: the last write to every block, and
zeros where nothing was written yet. A backup that fixed one instant for all the
disks of the guest therefore holds such a state; :func:`check_seqlog` finds ``N``
or says why the content is no such state (a later write present while an earlier
one is missing, a torn or foreign block).

A block is 64 lines of 64 bytes, each line naming itself::

    STASIS-SEQ 000000000042 vdb      00000007 L05..................\\n

The guest also counts finished writes in a file. Read before and after an instant
(``c1``, ``c2``), the ``N`` of that instant satisfies ``c1 <= N <= c2 + 1`` (the
count is written just after each write completes).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from stasis_testkit.errors import GuestKitError, SeqLogMismatch

BLOCK = 4096
LINE = 64
LINES = BLOCK // LINE
MAX_DISK_LABEL = 8
_HEADER = re.compile(rb"^STASIS-SEQ (\d{12}) (.{8}) (\d{8}) L00")


def seq_line(seq: int, disk: str, block: int, line: int) -> bytes:
    text = f"STASIS-SEQ {seq:012d} {disk:<8} {block:08d} L{line:02d}".ljust(LINE - 1, ".")
    return (text + "\n").encode()


def seq_block(seq: int, disk: str, block: int) -> bytes:
    """The exact 4 KiB the workload writes for ``seq`` at ``block`` of ``disk``'s region."""
    return b"".join(seq_line(seq, disk, block, i) for i in range(LINES))


@dataclass(frozen=True)
class SeqLogTarget:
    """A region of a guest disk: ``blocks`` blocks of 4 KiB from byte ``offset``."""

    disk: str
    offset: int = 0
    blocks: int = 64

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", self.disk):
            raise ValueError(f"disk {self.disk!r}: want a guest block device name like vdb")
        if self.offset % BLOCK or self.offset < 0:
            raise ValueError(f"offset {self.offset} is not a non-negative multiple of {BLOCK}")
        if self.blocks < 1:
            raise ValueError("a target needs at least one block")

    @property
    def size(self) -> int:
        return self.blocks * BLOCK


@dataclass(frozen=True)
class SeqLog:
    """The workload's parameters: where it writes. The same value checks what it wrote."""

    targets: tuple[SeqLogTarget, ...]

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a sequential log needs at least one target")
        if len({t.disk for t in self.targets}) != len(self.targets):
            raise ValueError("one target per disk")

    @classmethod
    def on(cls, *disks: str, blocks: int = 64, offset: int = 0) -> SeqLog:
        """The same region (``blocks`` from ``offset``) on each of ``disks``."""
        return cls(tuple(SeqLogTarget(d, offset, blocks) for d in disks))

    def locate(self, seq: int) -> tuple[int, int]:
        """(target index, block within the target's region) of write ``seq``."""
        n = len(self.targets)
        t = seq % n
        return t, (seq // n) % self.targets[t].blocks

    def expected_seq(self, n_writes: int, target: int, block: int) -> int | None:
        """The last write among the first ``n_writes`` that hit ``block`` of ``target``."""
        n = len(self.targets)
        m = self.targets[target].blocks
        first = block * n + target  # writes to this block: first, first + m*n, …
        if n_writes <= first:
            return None
        return first + ((n_writes - 1 - first) // (m * n)) * (m * n)

    def expected_region(self, n_writes: int, target: int) -> bytes:
        """The bytes of ``target``'s region after the first ``n_writes`` writes."""
        disk = self.targets[target].disk
        out = bytearray()
        for b in range(self.targets[target].blocks):
            s = self.expected_seq(n_writes, target, b)
            out += bytes(BLOCK) if s is None else seq_block(s, disk, b)
        return bytes(out)

    def script_args(self) -> list[str]:
        args: list[str] = []
        for t in self.targets:
            args += [t.disk, str(t.offset // BLOCK), str(t.blocks)]
        return args


@dataclass(frozen=True)
class BlockProblem:
    disk: str
    block: int
    found: int | None  # sequence number found, None for zeros
    wanted: int | None
    note: str = ""

    def __str__(self) -> str:
        def name(s: int | None) -> str:
            return "zeros (never written)" if s is None else f"seq {s}"
        text = f"{self.disk} block {self.block}: holds {name(self.found)}"
        if self.note:
            return f"{text} ({self.note})"
        return f"{text}, expected {name(self.wanted)}"


def _parse_block(data: bytes, disk: str, block: int) -> tuple[int | None, str]:
    """(sequence number or None for zeros, problem text or "") of one block."""
    if not any(data):
        return None, ""
    m = _HEADER.match(data)
    if m is None:
        return -1, "not a workload block (foreign or torn content)"
    seq = int(m.group(1))
    if data != seq_block(seq, disk, block):
        label = m.group(2).decode(errors="replace").strip()
        where = int(m.group(3))
        if label != disk or where != block:
            return seq, f"a block written for {label} block {where}"
        return seq, "torn or damaged: not the exact bytes of that write"
    return seq, ""


def check_seqlog(log: SeqLog, regions: Mapping[str, bytes]) -> int:
    """Return ``N`` such that ``regions`` (disk → bytes of its target region) hold exactly
    the state after the first ``N`` writes of ``log``; raise :class:`SeqLogMismatch`
    naming the blocks that no such state explains.
    """
    problems: list[BlockProblem] = []
    found: list[list[int | None]] = []
    for ti, target in enumerate(log.targets):
        data = regions.get(target.disk)
        if data is None:
            raise SeqLogMismatch(f"no data given for disk {target.disk}")
        if len(data) != target.size:
            raise SeqLogMismatch(
                f"{target.disk}: got {len(data)} bytes, the region is {target.size}")
        seqs: list[int | None] = []
        for b in range(target.blocks):
            seq, note = _parse_block(data[b * BLOCK:(b + 1) * BLOCK], target.disk, b)
            if note:
                problems.append(BlockProblem(target.disk, b, seq, None, note))
                seq = None if seq == -1 else seq
            elif seq is not None and log.locate(seq) != (ti, b):
                t2, b2 = log.locate(seq)
                problems.append(BlockProblem(
                    target.disk, b, seq, None,
                    f"seq {seq} belongs at {log.targets[t2].disk} block {b2}"))
            seqs.append(seq)
        found.append(seqs)
    present = [s for seqs in found for s in seqs if s is not None]
    n_writes = max(present) + 1 if present else 0
    if not problems:
        for ti, target in enumerate(log.targets):
            for b, seq in enumerate(found[ti]):
                wanted = log.expected_seq(n_writes, ti, b)
                if seq != wanted:
                    problems.append(BlockProblem(target.disk, b, seq, wanted))
    if problems:
        shown = "; ".join(str(p) for p in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise SeqLogMismatch(
            f"the newest write present is seq {n_writes - 1}, so the disks should hold the "
            f"state after {n_writes} writes, but {shown}{more}")
    return n_writes


# --- in the guest -------------------------------------------------------------------------

SEQLOG_SCRIPT = r"""#!/bin/sh
# stasis-seqlog: the sequential-log workload (see stasis_testkit/workload.py).
# usage: stasis-seqlog STATE_DIR LIMIT DELAY DISK FIRST_BLOCK BLOCKS [DISK FIRST_BLOCK BLOCKS ...]
state=$1 limit=$2 delay=$3
shift 3
T=0
while [ $# -ge 3 ]; do
    eval "d$T=\$1 f$T=\$2 m$T=\$3"
    T=$((T + 1))
    shift 3
done
FMT=''
ARGS=''
l=0
while [ $l -lt 64 ]; do
    FMT="${FMT}STASIS-SEQ %012d %-8s %08d L$(printf %02d $l)..................\n"
    ARGS="$ARGS \$seq \$d \$b"
    l=$((l + 1))
done
seq=0
echo 0 >"$state/count"
echo $$ >"$state/pid"
while [ ! -e "$state/stop" ]; do
    if [ "$limit" -ge 0 ] && [ $seq -ge "$limit" ]; then break; fi
    t=$((seq % T))
    eval "d=\$d$t f=\$f$t m=\$m$t"
    b=$(((seq / T) % m))
    if ! eval "printf \"\$FMT\" $ARGS" | dd of=/dev/$d bs=4096 seek=$((f + b)) count=1 \
            iflag=fullblock conv=notrunc,fsync 2>"$state/dd.err"; then
        echo "write $seq to $d block $b failed: $(cat "$state/dd.err")" >"$state/error"
        break
    fi
    seq=$((seq + 1))
    echo $seq >"$state/count"
    if [ "$delay" != 0 ]; then sleep "$delay"; fi
done
echo $seq >"$state/done"
"""


class CommandRunner(Protocol):
    """What the workload needs of a guest: run a shell command, get (status, output)."""

    name: str

    def run(self, command: str, *, timeout: float = 30.0, check: bool = False) -> tuple[int, str]:
        ...


class SeqLogWorkload:
    """The workload running in one guest. One per guest and ``tag`` at a time."""

    def __init__(self, guest: CommandRunner, log: SeqLog, *, tag: str = "seqlog") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", tag):
            raise ValueError(f"tag {tag!r}: letters, digits, _ and - only")
        self.guest = guest
        self.log = log
        self.state = f"/run/{tag}"

    def _sh(self, command: str, timeout: float = 30.0) -> str:
        return self.guest.run(command, timeout=timeout, check=True)[1]

    def zero(self) -> None:
        """Zero every target region in the guest (flushed), the state before write 0."""
        for t in self.log.targets:
            self._sh(f"dd if=/dev/zero of=/dev/{t.disk} bs={BLOCK} seek={t.offset // BLOCK} "
                     f"count={t.blocks} conv=notrunc,fsync 2>&1", timeout=60)

    def start(self, *, limit: int | None = None, delay: float = 0.0, zero: bool = True) -> None:
        """Start writing in the background; stop after ``limit`` writes if given."""
        if self.running():
            raise GuestKitError(f"the workload {self.state} already runs in {self.guest.name}")
        if zero:
            self.zero()
        args = " ".join(shlex.quote(a) for a in self.log.script_args())
        st = shlex.quote(self.state)
        lim = -1 if limit is None else limit
        self._sh(
            f"rm -rf {st} && mkdir -p {st} || exit 1\n"
            f"setsid stasis-seqlog {st} {lim} {delay:g} {args} </dev/null >{st}/log 2>&1 &\n"
            f"i=0; while [ ! -e {st}/pid ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done\n"
            f"test -e {st}/pid"
        )

    def running(self) -> bool:
        st = shlex.quote(self.state)
        return self.guest.run(f"test -e {st}/pid && test ! -e {st}/done")[0] == 0

    def count(self) -> int:
        """Writes finished so far (each one flushed to the disk)."""
        out = self._sh(f"cat {self.state}/count")
        return int(out.strip())

    def error(self) -> str | None:
        status, out = self.guest.run(f"cat {self.state}/error 2>/dev/null")
        return out.strip() if status == 0 and out.strip() else None

    def finished(self) -> bool:
        return self.guest.run(f"test -e {self.state}/done")[0] == 0

    def wait(self, timeout: float = 60.0) -> int:
        """Wait until the workload ends (its limit reached or stopped); return the count."""
        deadline = time.monotonic() + timeout
        while not self.finished():
            if time.monotonic() >= deadline:
                raise GuestKitError(
                    f"the workload in guest {self.guest.name} did not end within {timeout:.0f} s")
            time.sleep(0.05)
        problem = self.error()
        if problem:
            raise GuestKitError(f"the workload in guest {self.guest.name} failed: {problem}")
        return int(self._sh(f"cat {self.state}/done").strip())

    def stop(self, timeout: float = 30.0) -> int:
        """Ask the workload to stop after its current write; return how many it made."""
        self._sh(f"touch {self.state}/stop")
        return self.wait(timeout)

    def wait_count(self, at_least: int, timeout: float = 60.0) -> int:
        """Wait until at least ``at_least`` writes are done; return the count then."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            if n >= at_least:
                return n
            if self.finished() or time.monotonic() >= deadline:
                raise GuestKitError(
                    f"the workload in guest {self.guest.name} made only {n} of "
                    f"{at_least} writes" + (f": {self.error()}" if self.error() else ""))
            time.sleep(0.05)


def read_regions(log: SeqLog, read: Callable[[str, int, int], bytes],
                 disks: Sequence[str] | None = None) -> dict[str, bytes]:
    """Read every target region with ``read(disk, offset, length)`` (e.g. from images)."""
    wanted = set(disks) if disks is not None else None
    return {t.disk: read(t.disk, t.offset, t.size) for t in log.targets
            if wanted is None or t.disk in wanted}
