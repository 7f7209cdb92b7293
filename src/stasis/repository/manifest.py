"""Manifests: one recovery point, the repository's only commit point.

A manifest is JSON (UTF-8), sealed as kind 3 under ``manifests/<id>``. It holds
everything needed to bring the point back without any catalog: the VMs (or, for
disk-image points, one pseudo-VM of kind ``images``), their disks with geometry,
format and disk-index name, the domain XML where there is one, timings and lineage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from stasis.errors import StasisWarning

FORMAT_VERSION = 1


class ManifestFormatError(Exception):
    pass


@dataclass
class DiskRecord:
    name: str
    index: str  # hex name of the disk index object
    virtual_size: int
    format: str  # raw, qcow2, ... as it was at the source
    source: str = ""
    mode: str = "full"  # full | incremental
    reason: str = ""  # why a full read was needed (or how an incremental was based)
    bytes_read: int = 0
    bytes_new: int = 0  # plaintext bytes of chunks this point stored first
    stored_new: int = 0  # bytes those chunks took in the repository
    chunks_new: int = 0
    format_options: dict[str, Any] = field(default_factory=dict)
    # VM disks: the libvirt checkpoint whose bitmap holds the changes since this
    # point (the base of the next incremental), and the source's kind (file, block).
    checkpoint: str = ""
    source_kind: str = "file"


@dataclass
class VmRecord:
    name: str
    kind: str = "images"  # images | vm
    uuid: str = ""
    domain_xml: str = ""
    consistency: str = ""
    state: str = ""  # running | shut off, when captured
    disks: list[DiskRecord] = field(default_factory=list)
    # Files the VM needs beyond its disks (nvram, loader, kernel, initrd), by role.
    files: list[DiskRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    id: str
    name: str
    time: str  # ISO 8601, UTC, the instant the point captures
    kind: str = "image"  # image | vm | group
    parent: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    host: str = ""
    chunk_size: int = 0
    vms: list[VmRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stasis_version: str = ""
    format_version: int = FORMAT_VERSION
    # Point-wide facts beyond the disks: the consistency asked for and reached, the
    # hooks that ran, a group's members and who joined or left since the last point.
    extra: dict[str, Any] = field(default_factory=dict)
    # What the run that made this point warns of after it committed (a libvirt job it
    # could not end, say). Never stored: it is about that run, not about the point.
    run_warnings: list[StasisWarning] = field(default_factory=list, compare=False)

    @property
    def virtual_size(self) -> int:
        return sum(d.virtual_size for vm in self.vms for d in vm.disks)

    @property
    def bytes_read(self) -> int:
        return sum(d.bytes_read for vm in self.vms for d in vm.disks)

    def disks(self) -> list[tuple[VmRecord, DiskRecord]]:
        return [(vm, d) for vm in self.vms for d in vm.disks]

    def streams(self) -> list[tuple[VmRecord, DiskRecord]]:
        """Every stored stream: disks, then the VMs' files (nvram, kernel...)."""
        return self.disks() + [(vm, f) for vm in self.vms for f in vm.files]

    def to_dict(self) -> dict[str, Any]:
        stored = asdict(self)
        del stored["run_warnings"]
        return stored

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        try:
            version = int(raw.get("format_version", 0))
            if version != FORMAT_VERSION:
                raise ManifestFormatError(f"manifest format version {version} is unknown")
            vms = [
                VmRecord(**{
                    **vm,
                    "disks": [DiskRecord(**d) for d in vm["disks"]],
                    "files": [DiskRecord(**d) for d in vm.get("files", [])],
                })
                for vm in raw["vms"]
            ]
            raw = {k: v for k, v in raw.items() if k != "run_warnings"}
            return cls(**{**raw, "vms": vms})
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestFormatError(f"malformed manifest: {e}") from None

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestFormatError(f"manifest is not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ManifestFormatError("manifest is not a JSON object")
        return cls.from_dict(raw)
