"""What runs inside nbdkit: :class:`PluginServer`, the state of the python plugin.

The plugin gets the repository's credentials through an inherited pipe (never on a
command line nor in the environment, :mod:`.credentials`). It holds a shared
repository lock while it runs, so garbage collection never takes a chunk a running
export may still read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from stasis.backends import open_backend
from stasis.recovery.diskread import DEFAULT_CACHE_BYTES, DiskReader
from stasis.recovery.export.credentials import read_credentials
from stasis.recovery.restore import select_disk
from stasis.repository import Manifest, Repository

EXTENT_HOLE, EXTENT_ZERO = 1, 2


@dataclass
class PluginServer:
    """The plugin's state in nbdkit: configured by ``key=value`` parameters.

    ``repo=PATH point=ID disk=VM/DISK...`` (``disk`` repeats; the export name of
    each is the disk's name, or ``VM/DISK`` when two VMs share a disk name),
    ``credfd=N`` (a pipe holding the credentials as JSON), ``cache_mib=N``, ``lock=0``
    (take no shared repository lock: for an export that lives as long as a linked
    clone, whose point a hold keeps instead, so that gc is not kept waiting).
    """

    repo_path: str = ""
    point_id: str = ""
    disks: list[str] = field(default_factory=list)
    cred_fd: int = -1
    cache_bytes: int = DEFAULT_CACHE_BYTES
    lock: bool = True
    readers: dict[str, DiskReader] = field(default_factory=dict)
    default: str = ""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def config(self, key: str, value: str) -> None:
        if key == "repo":
            self.repo_path = value
        elif key == "point":
            self.point_id = value
        elif key == "disk":
            self.disks.append(value)
        elif key == "credfd":
            self.cred_fd = int(value)
        elif key == "cache_mib":
            self.cache_bytes = int(value) << 20
        elif key == "lock":
            self.lock = value not in ("0", "no", "false")
        else:
            raise ValueError(f"unknown parameter {key}")

    def config_complete(self) -> None:
        creds = read_credentials(self.cred_fd)
        repo = Repository.open(open_backend(self.repo_path), creds)
        point = repo.resolve(self.point_id)
        if self.lock:
            self._stack.enter_context(repo.shared_lock(f"export {point.id[:12]}"))
        names = export_names(point, self.disks)
        for spec, name in names.items():
            vm, disk = spec.split("/", 1)
            vm_rec, disk_rec = select_disk(point, vm, disk)
            self.readers[name] = DiskReader.open(repo, point, vm_rec, disk_rec,
                                                 cache_bytes=self.cache_bytes)
        self.default = next(iter(self.readers))

    def reader(self, export_name: str) -> DiskReader:
        reader = self.readers.get(export_name or self.default)
        if reader is None:
            raise KeyError(f"no export named {export_name!r}")
        return reader

    def cleanup(self) -> None:
        self._stack.close()


def export_names(point: Manifest, specs: list[str]) -> dict[str, str]:
    """``VM/DISK`` → export name: the disk's name unless two VMs share it."""
    disk_names = [s.split("/", 1)[1] for s in specs]
    return {s: (s.split("/", 1)[1] if disk_names.count(s.split("/", 1)[1]) == 1 else s)
            for s in specs}
