"""The detached nbdkit export of an entry: started in its socket directory, stopped.

The socket directory lives under :func:`~.state.run_root` and names the state file
that owns it, so that a directory whose owner is gone is known as debris.
"""

from __future__ import annotations

import os
import pwd
import shutil
import xml.etree.ElementTree as ET

from stasis.hypervisor.domain import parse
from stasis.recovery.export import ExportProcess, start_nbdkit, stop_exports_in, stop_process
from stasis.recovery.instant.state import Entry, entry_path, run_root, save
from stasis.repository import Credentials, Manifest, Repository


def qemu_owner(domain_xml: str) -> tuple[int, int] | None:
    """The uid and gid QEMU will run as for this domain (to let it reach the socket)."""
    dac = parse(domain_xml).dac
    if dac is not None:
        return dac
    root = ET.fromstring(domain_xml)
    for label in root.iterfind("seclabel"):
        if label.get("model") == "dac" and label.get("type") == "none":
            return None
    try:
        user = pwd.getpwnam("libvirt-qemu")
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def start_export(entry: Entry, repo: Repository, creds: Credentials, point: Manifest,
                  disks: list[tuple[str, str]], owner: tuple[int, int] | None, *,
                  lock: bool = True) -> ExportProcess:
    run_dir = run_root() / entry.id
    run_dir.mkdir(mode=0o700)
    # Which state file owns this directory: without it, the directory is debris.
    (run_dir / "entry").write_text(str(entry_path(entry.kind, entry.key)))
    entry.run_dir = str(run_dir)
    entry.socket = str(run_dir / "nbd.sock")
    save(entry)
    export = start_nbdkit(repo, creds, point, disks, socket_path=entry.socket,
                          work_dir=run_dir, detached=True, lock=lock)
    entry.export_pid, entry.export_start = export.pid, export.start
    entry.exports = {spec.split("/", 1)[1]: name for spec, name in export.exports.items()}
    save(entry)
    if owner is not None and owner != (0, 0):
        os.chown(run_dir, *owner)
        os.chown(entry.socket, *owner)
    run_dir.chmod(0o750)
    return export


def export_uri(entry: Entry, disk: str) -> str:
    return f"nbd+unix:///{entry.exports[disk]}?socket={entry.socket}"


def stop_export(entry: Entry) -> None:
    stop_process(entry.export_pid, entry.export_start)
    if entry.run_dir:
        stop_exports_in(entry.run_dir)  # one whose starter died before recording it
        shutil.rmtree(entry.run_dir, ignore_errors=True)
