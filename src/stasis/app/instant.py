"""Disks and VMs served straight from a point: ``export``, instant VMs (start, list,
finalize, discard), disks attached to running VMs, and disks served for the server's
clients until stopped (:func:`serve_disk`).

Each is an export of the point (:mod:`stasis.recovery.export`); the detached ones
(:mod:`stasis.recovery.instant`) outlive the command, so their repository opener
gives the credentials too, concrete (no prompt left), for the export process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from stasis.app.auth import Tenant
from stasis.app.models import (
    Attached,
    Detached,
    Discarded,
    ExportInfoModel,
    Finalized,
    InstantStarted,
    RunningFromRepo,
    RunningOwned,
    ServedExport,
)
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.progress import Progress
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


def finalize(connect: str, open_repo: ExportOpener, name: str,
             progress: Progress | None = None, pool: str | None = None) -> Finalized:
    """Copy the instant VM's disks to local storage (or new volumes of the libvirt
    ``pool``) while it runs; then stop its export (what the job kind
    ``instant.finalize`` runs, here in the foreground)."""
    conn = lv.connect(connect)
    r, _creds = open_repo()
    return Finalized.model_validate(
        instant_mod.finalize(conn, r, name, progress, pool=pool).to_dict())


def instant_repository(name: str) -> str:
    """The location of the repository the instant VM ``name`` runs from
    (InstantNotFound: none of that name was started here)."""
    return instant_mod.find_instant(name).repo


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


# ------------------------------------------------------------ for the server


def serve_disk(open_repo: ExportOpener, point: str, *, vm: str | None = None,
               disk: str | None = None) -> ServedExport:
    """Serve a disk of ``point`` read-only over NBD (a unix socket) until
    :func:`stop_served`: a detached export, so it outlives the request."""
    r, creds = open_repo()
    m = r.resolve(point)
    return _served(instant_mod.serve_disk(r, creds, m, vm=vm, disk=disk))


def _served(e: instant_mod.Entry) -> ServedExport:
    return ServedExport(id=e.name, point=e.point, vm=e.vm, disk=e.disk, repo=e.repo,
                        uri=instant_mod.uri_of(e), socket=e.socket, export_pid=e.export_pid,
                        export_alive=e.export_alive, created=e.created,
                        tenant=e.tenant or None, by=e.by or None)


def served() -> list[ServedExport]:
    """The disks served by :func:`serve_disk`."""
    return [_served(e) for e in instant_mod.entries("export")]


def find_served(export_id: str) -> ServedExport:
    return _served(instant_mod.find_served(export_id))


def stop_served(export_id: str) -> ServedExport:
    """Stop serving ``export_id``."""
    return _served(instant_mod.stop_served(export_id))


def running_owned(connect: str) -> list[RunningOwned]:
    """What runs from a repository (as :func:`running`), with who started each."""
    owners = {(e.kind, e.name, e.target): (e.tenant, e.by) for e in instant_mod.entries()}
    rows = []
    for row in instant_mod.listing(lv.connect(connect)):
        if row["kind"] == "export":
            continue
        tenant, by = owners.get((row["kind"], row["name"], row["target"] or ""), ("", ""))
        rows.append(RunningOwned.model_validate({**row, "tenant": tenant or None,
                                                 "by": by or None}))
    return rows


def owner_of(kind: str, key: str) -> str | None:
    """The tenant that started the entry ``kind``/``key`` (None: the system, or none
    such)."""
    for e in instant_mod.entries(kind):
        if e.key == key:
            return e.tenant or None
    return None


def owners(kind: str) -> dict[str, str | None]:
    """The tenant that started each entry of ``kind``, by key (None: the system)."""
    return {e.key: e.tenant or None for e in instant_mod.entries(kind)}


def set_owner(kind: str, key: str, *, tenant: str | None, by: str) -> None:
    """Record who started the entry ``kind``/``key``."""
    instant_mod.set_owner(kind, key, tenant=tenant, by=by)


def check_targets(tenant: Tenant | None, *, storage: Path | None,
                  network: str | None, pool: str | None = None) -> None:
    """Refuse, before anything is made, a place a tenant may not restore to: the
    storage directory must lie in one of its ``restore_dirs``, the network be one of
    its ``restore_networks`` (and be named: a VM's own networks are not the tenant's
    to choose), a pool one of its ``restore_pools``. The system may restore anywhere."""
    if tenant is None:
        return
    from stasis.recovery.vm import DEFAULT_STORAGE

    where = (storage or DEFAULT_STORAGE).absolute()
    if pool is not None:
        from stasis.app.start import check_pool

        check_pool(tenant, pool)  # TargetNotAllowed; the disks go to the pool alone
    elif not any(where == Path(d) or Path(d) in where.parents for d in tenant.restore_dirs):
        raise UsageError(f"tenant {tenant.name} may not restore to {where}: its storage "
                         f"directories are {', '.join(tenant.restore_dirs) or 'none'}. "
                         "Nothing was made.")
    if network is None or network not in tenant.restore_networks:
        shown = f"network {network}" if network is not None else "the VM's own networks"
        raise UsageError(f"tenant {tenant.name} may not connect a VM to {shown}: give a "
                         f"network among {', '.join(tenant.restore_networks) or 'none'}. "
                         "Nothing was made.")
