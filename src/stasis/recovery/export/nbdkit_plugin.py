"""The nbdkit python plugin serving disks of a point (see :mod:`stasis.recovery.export`).

nbdkit loads this file as a script in its embedded interpreter, which has the
system's ``sys.path``: the process that starts nbdkit passes its own in
``STASIS_PLUGIN_PATH`` so Stasis and its dependencies import as they do there.
Everything but the glue between nbdkit's callbacks and
:class:`~stasis.recovery.export.plugin_server.PluginServer` lives in that module.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Any

# The starter's order wins, also over entries this interpreter has already (from
# PYTHONPATH): otherwise another checkout later on the starter's path could shadow it.
_starter = [p for p in os.environ.get("STASIS_PLUGIN_PATH", "").split(os.pathsep) if p]
sys.path[:] = [*dict.fromkeys(_starter), *(p for p in sys.path if p not in _starter)]

from stasis.errors import IntegrityError  # noqa: E402
from stasis.recovery.export.plugin_server import (  # noqa: E402
    EXTENT_HOLE,
    EXTENT_ZERO,
    PluginServer,
)

nbdkit: Any = importlib.import_module("nbdkit")  # only exists inside nbdkit

API_VERSION = 2
_server = PluginServer()


def config(key: str, value: str) -> None:
    _server.config(key, value)


def config_complete() -> None:
    _server.config_complete()


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def cleanup() -> None:
    _server.cleanup()


def list_exports(readonly: bool, is_tls: bool) -> list[str]:
    return list(_server.readers)


def default_export(readonly: bool, is_tls: bool) -> str:
    return _server.default


def open(readonly: bool) -> Any:  # the name nbdkit calls
    try:
        return _server.reader(nbdkit.export_name())
    except KeyError:
        nbdkit.set_error(errno.ENOENT)
        raise


def get_size(h: Any) -> int:
    return int(h.size)


def can_write(h: Any) -> bool:
    return False


def can_multi_conn(h: Any) -> bool:
    return True


def can_extents(h: Any) -> bool:
    return True


def can_cache(h: Any) -> int:
    return int(nbdkit.CACHE_NONE)


def block_size(h: Any) -> tuple[int, int, int]:
    return (1, 64 * 1024, 32 * 1024 * 1024)


def pread(h: Any, buf: Any, offset: int, flags: int) -> None:
    try:
        buf[:] = h.read_at(offset, len(buf))
    except IntegrityError as e:
        nbdkit.debug(str(e))
        sys.stderr.write(f"stasis export: {e}\n")
        nbdkit.set_error(errno.EIO)
        raise


def extents(h: Any, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    runs = h.extents(offset, count)
    if flags & nbdkit.FLAG_REQ_ONE:
        runs = runs[:1]
    return [(o, n, EXTENT_HOLE | EXTENT_ZERO if zero else 0) for o, n, zero in runs]
