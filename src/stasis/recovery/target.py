"""Where a restore puts the disks it writes: a storage directory or a libvirt pool.

A directory that does not exist is made (with its parents) once every other check
passed, and removed again, as far as this restore made it, when the restore fails.
In a pool every disk and file is a volume made through the pool under its final
name (libvirt has no rename), then filled in place by the sparse writer; a failed
or interrupted restore deletes the volumes it made through the pool, so none that
looks complete is left. A volume name already taken is refused before anything is
made (TargetExists, as an existing file is).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from stasis.errors import TargetExists, UsageError
from stasis.hypervisor import pools
from stasis.progress import Progress
from stasis.recovery.restore import FORMATS, RestoreResult, fill_image, select_disk
from stasis.repository import Manifest, Repository


def check_directory(path: Path) -> bool:
    """Whether ``path`` must be made (False: it is a directory already); a UsageError
    when it is something else, or cannot be made under its nearest existing parent."""
    if path.is_dir():
        return False
    if path.exists() or path.is_symlink():
        raise UsageError(f"the storage path {path} exists and is not a directory; nothing "
                         "was restored")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"the storage directory {path} does not exist and cannot be made "
                         f"under {parent}; nothing was restored")
    return True


def make_directory(path: Path) -> list[Path]:
    """Make ``path`` and its missing parents; return those made, the outermost first."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    missing.reverse()
    try:
        for p in missing:
            p.mkdir()
    except OSError as e:
        remove_directories([m for m in missing if m.is_dir()])
        raise UsageError(f"the storage directory {path} could not be made "
                         f"({e.strerror or e}); nothing was restored") from None
    return missing


def remove_directories(made: list[Path]) -> None:
    """Remove the directories ``make_directory`` made, innermost first, when empty."""
    for p in reversed(made):
        with contextlib.suppress(OSError):
            p.rmdir()


@dataclass
class Volumes:
    """The volumes one restore made in a pool, deleted again by :meth:`undo`."""

    pool: pools.Pool
    made: list[str] = field(default_factory=list)

    def check_free(self, names: list[str]) -> None:
        for name in names:
            if pools.volume_taken(self.pool, name):
                raise TargetExists(f"volume {name} of the storage pool {self.pool.name}")

    def create(self, name: str, fmt: str, capacity: int,
               options: dict[str, object] | None = None) -> str:
        path = pools.create_volume(self.pool, name, fmt, capacity, options)
        self.made.append(name)
        return path

    def undo(self) -> list[str]:
        """Delete the volumes made; return those that could not be."""
        left = [name for name in reversed(self.made) if not pools.delete_volume(self.pool, name)]
        self.made.clear()
        return left


def fill_volume(volumes: Volumes, repo: Repository, point: Manifest, *, name: str, vm: str,
                disk: str, fmt: str, progress: Progress | None = None,
                run_dir: Path | None = None, workers: int | None = None) -> RestoreResult:
    """Make the volume ``name`` in the pool for ``vm``/``disk`` of ``point`` and write
    the disk into it; the caller undoes ``volumes`` on failure."""
    _rec, disk_rec = select_disk(point, vm, disk)
    fmt = volumes.pool.volume_format(fmt)
    options = disk_rec.format_options if disk_rec.format == fmt else {}
    path = volumes.create(name, fmt, disk_rec.virtual_size, dict(options))
    result = fill_image(repo, point, target=Path(path), vm=vm, disk=disk, fmt=fmt,
                        progress=progress, run_dir=run_dir, workers=workers)
    result.pool, result.volume = volumes.pool.name, name
    return result


def default_volume(vm: str, disk: str, fmt: str) -> str:
    """The volume a disk restored alone goes to when no name is given."""
    return f"{vm}-restored-{disk}{suffix(fmt)}"


def suffix(fmt: str) -> str:
    return {"qcow2": ".qcow2", "raw": ".img"}.get(fmt, f".{fmt}")


def restore_disk_to_pool(
    conn: libvirt.virConnect, repo: Repository, point: Manifest, *, pool: str,
    volume: str | None = None, vm: str | None = None, disk: str | None = None,
    fmt: str | None = None, progress: Progress | None = None,
    run_dir: Path | None = None, workers: int | None = None,
) -> RestoreResult:
    """Write one disk of ``point`` into a new volume of ``pool`` (``volume``, or
    :func:`default_volume`); a failure leaves no volume."""
    started = time.time()
    vm_rec, disk_rec = select_disk(point, vm, disk)
    out_fmt = fmt or (disk_rec.format if disk_rec.format in FORMATS else "qcow2")
    if out_fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not '{out_fmt}'")
    if volume is not None and (not volume or "/" in volume):
        raise UsageError(f"--to names a volume of the pool with --pool: '{volume}' is no "
                         "volume name; nothing was restored")
    vols = Volumes(pools.open_pool(conn, pool))
    if fmt is not None and vols.pool.volume_format(fmt) != fmt:
        raise UsageError(f"the storage pool '{pool}' holds block volumes, written raw: use "
                         "--format raw; nothing was restored")
    out_fmt = vols.pool.volume_format(out_fmt)
    name = volume or default_volume(vm_rec.name, disk_rec.name, out_fmt)
    vols.check_free([name])
    try:
        result = fill_volume(vols, repo, point, name=name, vm=vm_rec.name, disk=disk_rec.name,
                             fmt=out_fmt, progress=progress, run_dir=run_dir, workers=workers)
    except BaseException:
        vols.undo()
        raise
    result.duration_s = round(time.time() - started, 3)
    return result
