"""Files of a point, read straight from the repository: list, find, extract.

Every operation holds a shared lock of the repository while it reads, so gc cannot
sweep the chunks it reads meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stasis.app.models import ExtractReport, FileEntry, VolumeRow
from stasis.errors import DiskNotFound
from stasis.recovery.files import DiskFiles, Entry, Volume, extract
from stasis.repository import Repository


def _entry(e: Entry, *, vm: str | None = None, disk: str | None = None) -> FileEntry:
    entry = FileEntry.model_validate({**e.to_dict(), "mode_text": e.mode_text})
    if vm is not None:  # set only where known, so that a listing's dump leaves them out
        entry.vm, entry.disk = vm, disk
    return entry


def _row(x: Entry | Volume) -> FileEntry | VolumeRow:
    return VolumeRow.model_validate(x.to_dict()) if isinstance(x, Volume) else _entry(x)


def list_files(repo: Repository, point: str, path: str = "/", *, vm: str | None = None,
               disk: str | None = None) -> list[FileEntry | VolumeRow]:
    """A directory (or one file) of a disk of ``point``; the volumes at the top of a
    disk of several (``VOLUME:/PATH`` then names one)."""
    m = repo.resolve(point)
    with repo.shared_lock(f"files ls {m.id[:12]}"):
        return [_row(x) for x in DiskFiles.open(repo, m, vm=vm, disk=disk).ls(path)]


def extract_files(repo: Repository, point: str, paths: list[str], to: Path, *,
                  vm: str | None = None, disk: str | None = None,
                  force: bool = False) -> ExtractReport:
    """Extract files, directories and symlinks of ``point`` into the directory ``to``
    (nothing written outside it, nothing there replaced without ``force``)."""
    m = repo.resolve(point)
    with repo.shared_lock(f"files get {m.id[:12]}"):
        files = DiskFiles.open(repo, m, vm=vm, disk=disk)
        result = extract(files, paths, to, force=force)
    return ExtractReport.model_validate({"point": m.id, **result.to_dict()})


def find_files(repo: Repository, point: str, pattern: str, *, vm: str | None = None,
               disk: str | None = None, on_found: Callable[[FileEntry, bool], None] | None = None,
               ) -> list[FileEntry]:
    """Files of ``point`` whose name (or whole path, when ``pattern`` holds a '/') matches,
    on every disk unless ``vm``/``disk`` narrow it. ``on_found`` hears each at once (and
    whether the search spans several disks)."""
    m = repo.resolve(point)
    pairs = [(v, d) for v, d in m.disks()
             if (vm is None or v.name == vm) and (disk is None or d.name == disk)]
    if not pairs:
        listing = ", ".join(f"{v.name}/{d.name}" for v, d in m.disks())
        raise DiskNotFound(f"point {m.id[:12]} has no disk matching --vm {vm} --disk {disk} "
                           f"(it has: {listing})")
    found: list[FileEntry] = []
    with repo.shared_lock(f"files find {m.id[:12]}"):
        for v, d in pairs:
            for e in DiskFiles.of_disk(repo, m, v, d).find(pattern):
                entry = _entry(e, vm=v.name, disk=d.name)
                found.append(entry)
                if on_found is not None:
                    on_found(entry, len(pairs) > 1)
    return found
