"""The state files of instant VMs, linked clones and attached disks.

Each is recorded, *before* anything is created, in a small JSON file under
``<state dir>/instant/``: what it is, the point, the export's pid and start time,
its socket directory, the overlays and files it made. A command killed mid-way, or
an export that died, therefore leaves nothing that ``stasis instant discard`` (or
``stasis detach``) and ``stasis doctor --fix`` cannot find and remove.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stasis.errors import InstantNotFound
from stasis.recovery.export import alive
from stasis.repository import Manifest, Repository
from stasis.repository.process import start_token
from stasis.rundirs import socket_base
from stasis.settings import state_dir

VM_KINDS = ("instant", "clone")  # entries that are a VM of their own


@dataclass
class Entry:
    """One instant VM (``kind`` instant), linked clone (``kind`` clone), attached disk
    (``kind`` attach) or disk served over NBD for the server's clients (``kind`` export,
    named by its id)."""

    kind: str
    name: str  # instant, clone: the new VM; attach: the VM the disk is attached to
    id: str  # random, names the socket directory and marks the domain
    vm: str  # the VM of the point
    point: str
    repo: str
    state: str  # starting | running | finalizing | attached | linked (a clone)
    created: float
    creator_pid: int
    creator_start: str
    storage: str = ""
    run_dir: str = ""
    socket: str = ""
    export_pid: int = 0
    export_start: str = ""
    exports: dict[str, str] = field(default_factory=dict)  # disk -> export name
    overlays: dict[str, str] = field(default_factory=dict)  # disk -> overlay path
    files: list[str] = field(default_factory=list)  # restored kernel, NVRAM, ...
    copies: dict[str, str] = field(default_factory=dict)  # disk -> finalize destination
    target: str = ""  # attach: the guest's device name
    disk: str = ""  # attach, export: the disk of the point
    tenant: str = ""  # who started it, when started for a tenant through the API
    by: str = ""  # the user who started it through the API

    @property
    def key(self) -> str:
        if self.kind in VM_KINDS or self.kind == "export":
            return self.name
        return f"{self.name}@{self.target}"

    @property
    def export_alive(self) -> bool:
        return alive(self.export_pid, self.export_start)

    @property
    def creator_alive(self) -> bool:
        return alive(self.creator_pid, self.creator_start)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entries_dir() -> Path:
    path = state_dir() / "instant"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def entry_path(kind: str, key: str) -> Path:
    return entries_dir() / f"{kind}-{key}.json"


def save(entry: Entry) -> None:
    path = entry_path(entry.kind, entry.key)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "w") as f:
        json.dump(entry.to_dict(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def forget(entry: Entry) -> None:
    entry_path(entry.kind, entry.key).unlink(missing_ok=True)


def set_owner(kind: str, key: str, *, tenant: str | None, by: str) -> None:
    """Record who started the entry ``kind``/``key`` (its tenant, None: the system)."""
    for e in entries(kind):
        if e.key == key:
            e.tenant, e.by = tenant or "", by
            save(e)
            return


def entries(kind: str | None = None) -> list[Entry]:
    found = []
    for path in sorted(entries_dir().glob("*.json")):
        try:
            entry = Entry(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if kind is None or entry.kind == kind:
            found.append(entry)
    return found


def find_instant(name: str) -> Entry:
    for e in entries("instant"):
        if e.name == name:
            return e
    raise InstantNotFound(f"No instant VM named '{name}' was started here. 'stasis instant list' "
                       "shows them.")


def run_root() -> Path:
    """Where export sockets live: QEMU must reach them, and a socket path is short."""
    if os.geteuid() == 0:
        path = Path("/run/stasis/instant")
    else:
        path = socket_base(state_dir() / "instant-run")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)
    return path


def new_entry(kind: str, name: str, vm: str, point: Manifest, repo: Repository,
               **kw: Any) -> Entry:
    pid = os.getpid()
    return Entry(kind=kind, name=name, id=secrets.token_hex(4), vm=vm, point=point.id,
                 repo=repo.url, state="starting", created=time.time(), creator_pid=pid,
                 creator_start=start_token(pid), **kw)
