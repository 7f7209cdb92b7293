"""Disks and VMs served straight from a point: ``export``, instant VMs (start, list,
finalize, discard) and disks attached to running VMs.

Each is an export of the point (:mod:`stasis.recovery.export`); the detached ones
(:mod:`stasis.recovery.instant`) outlive the command, so their repository opener
gives the credentials too, concrete (no prompt left), for the export process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from stasis.app.models import (
    Attached,
    Detached,
    Discarded,
    ExportInfoModel,
    Finalized,
    InstantStarted,
    RunningFromRepo,
)
from stasis.hypervisor import libvirt_api as lv
from stasis.recovery import export as export_mod
from stasis.recovery import instant as instant_mod
from stasis.repository import Credentials, Repository
from stasis.settings import run_dir

# The repository and credentials an export process can open it with (it gets them
# through a pipe, so they can ask nothing).
ExportOpener = Callable[[], tuple[Repository, Credentials]]


@contextlib.contextmanager
def export(open_repo: ExportOpener, point: str, *, vm: str | None = None,
           disk: str | None = None, socket: Path | None = None, port: int | None = None,
           writable: bool = False, overlay: Path | None = None,
           keep_overlay: bool = False) -> Iterator[ExportInfoModel]:
    """Serve a disk of ``point`` over NBD while the block runs; its sockets, and the
    overlay unless ``keep_overlay``, are removed at the end."""
    r, creds = open_repo()
    m = r.resolve(point)
    with export_mod.serve(r, creds, m, vm=vm, disk=disk, socket_path=socket, port=port,
                          writable=writable, overlay=overlay, keep_overlay=keep_overlay,
                          run_dir=run_dir()) as info:
        yield ExportInfoModel.model_validate(info.to_dict())


def start(connect: str, open_repo: ExportOpener, point: str, *, vm: str | None = None,
          name: str | None = None, network: str | None = None,
          storage: Path | None = None) -> InstantStarted:
    """Define and start a VM whose disks are overlays on an export of ``point``."""
    conn = lv.connect(connect)
    r, creds = open_repo()
    m = r.resolve(point)
    result = instant_mod.start_instant(conn, r, creds, m, vm=vm, name=name, network=network,
                                       storage=storage)
    return InstantStarted.model_validate(result.to_dict())


def running(connect: str) -> list[RunningFromRepo]:
    """Instant VMs, linked clones and attached disks running from a repository."""
    return [RunningFromRepo.model_validate(row)
            for row in instant_mod.listing(lv.connect(connect))]


def finalize(connect: str, open_repo: ExportOpener, name: str) -> Finalized:
    """Copy the instant VM's disks to local storage while it runs; then stop its export."""
    conn = lv.connect(connect)
    r, _creds = open_repo()
    return Finalized.model_validate(instant_mod.finalize(conn, r, name).to_dict())


def discard(connect: str, name: str) -> Discarded:
    """Stop and undefine the instant VM, stop its export, remove its overlays."""
    return Discarded(name=name, removed=instant_mod.discard(lv.connect(connect), name))


def attach(connect: str, open_repo: ExportOpener, point: str, *, vm: str, disk: str, to: str,
           target: str | None = None) -> Attached:
    """Attach disk ``disk`` of VM ``vm`` of ``point`` read-only to the running VM ``to``."""
    conn = lv.connect(connect)
    r, creds = open_repo()
    m = r.resolve(point)
    result = instant_mod.attach(conn, r, creds, m, vm=vm, disk=disk, to=to, target=target)
    return Attached.model_validate(result.to_dict())


def detach(connect: str, vm: str, target: str | None = None) -> Detached:
    """Detach a disk attached from a point and stop its export."""
    return Detached.model_validate(instant_mod.detach(lv.connect(connect), vm, target))
