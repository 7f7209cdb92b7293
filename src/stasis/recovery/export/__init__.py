"""Disks of a point served over NBD straight from the repository.

The server is nbdkit with its python plugin (:mod:`.nbdkit_plugin`), which runs a
:class:`PluginServer` (:mod:`.plugin_server`) inside nbdkit: every read is answered
from verified chunks through a small cache
(:class:`~stasis.recovery.diskread.DiskReader`, which nbdkit's threads share), and
block status reports the unstored (all-zero) chunks as holes, so clients copy a
sparse disk as sparse. nbdkit does the protocol (handshake, export names, many
connections, structured replies) and the python plugin keeps the repository code
in Python, where it already is; an NBD server of our own would only re-implement
what nbdkit does well. :func:`start_nbdkit` (:mod:`.nbdkit_process`) starts one,
attached or detached; :func:`serve` (:mod:`.foreground`) is ``stasis export``; a
writable export keeps the point untouched, its writes going to a qcow2 overlay
(:mod:`.overlay`) served by qemu-nbd.
"""

from __future__ import annotations

from stasis.recovery.export.credentials import credentials_json, read_credentials
from stasis.recovery.export.foreground import ExportInfo, serve
from stasis.recovery.export.nbdkit_process import ExportProcess, start_nbdkit
from stasis.recovery.export.overlay import create_overlay
from stasis.recovery.export.pids import alive, stop_exports_in, stop_process
from stasis.recovery.export.plugin_server import (
    EXTENT_HOLE,
    EXTENT_ZERO,
    PluginServer,
    export_names,
)

__all__ = [
    "EXTENT_HOLE", "EXTENT_ZERO", "ExportInfo", "ExportProcess", "PluginServer", "alive",
    "create_overlay", "credentials_json", "export_names", "read_credentials", "serve",
    "start_nbdkit", "stop_exports_in", "stop_process",
]
