"""The backend contract."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@runtime_checkable
class Backend(Protocol):
    """An object store.

    Keys are relative, slash-separated, made of ``[A-Za-z0-9._-]`` segments.

    Contract, which the conformance suite checks:

    - ``put`` is atomic: a reader sees the whole old object, the whole new one, or
      nothing; never a prefix. It may be repeated (same key, same data) safely.
    - ``sync`` makes durable (it survives a crash of the host) every object this
      instance put or deleted before it, and every object it found (``exists``,
      ``get`` or ``size`` answered), even one another process put and has not
      synced yet: a manifest may name a chunk this process only found. The
      repository calls it before writing a manifest, and again after. Its cost
      follows what the instance touched, not the size of the store. (A backend
      whose put is durable on return makes it a no-op.)
    - ``get`` of a missing key raises :class:`stasis.errors.ObjectNotFound`
      (permanent). Any other failure raises ``OSError`` (worth a retry for a
      network backend; ``ENOSPC`` is permanent until space is freed).
    - ``delete`` of a missing key is not an error (deletes may repeat).
    - ``list`` yields every committed object under a prefix, in no set order, never
      a partial upload or a temporary file.
    - ``exists`` and ``size`` are cheap metadata calls.
    """

    url: str

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def sync(self) -> None: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
