"""The repository: a self-describing, deduplicated, compressed, encrypted store.

It knows chunks, disk indexes, manifests, keys and locks, and nothing of libvirt
or NBD. Its on-disk format is written down in docs/format.md.
"""

from stasis.repository.index import ZERO_NAME, DiskIndex
from stasis.repository.manifest import DiskRecord, Manifest, VmRecord
from stasis.repository.repo import Credentials, ObjectDamaged, Repository

__all__ = [
    "ZERO_NAME",
    "Credentials",
    "DiskIndex",
    "DiskRecord",
    "Manifest",
    "ObjectDamaged",
    "Repository",
    "VmRecord",
]
