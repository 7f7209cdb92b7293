"""What a listing shows of one file of a point (:class:`Entry`)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stasis.recovery.files.filesystems import KINDS, Node

_KIND_BITS = {v: k for k, v in KINDS.items()}


@dataclass(frozen=True)
class Entry:
    """What a listing shows of one file."""

    name: str
    path: str  # as the user names it again: "/etc/hosts" or "p2:/etc/hosts"
    type: str
    size: int
    mode: int
    mtime_ns: int
    link: str | None = None

    @classmethod
    def of(cls, node: Node, path: str) -> Entry:
        link = None
        if node.kind == "symlink":
            try:
                link = node.link()
            except Exception:
                link = "?"
        return cls(node.name, path, node.kind, node.size if node.kind == "file" else 0,
                   node.mode, node.mtime_ns, link)

    @property
    def mode_text(self) -> str:
        return stat.filemode(_KIND_BITS.get(self.type, 0) | self.mode)

    @property
    def mtime(self) -> str:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC).isoformat()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "type": self.type, "size": self.size,
                "mode": f"{self.mode:04o}", "mtime": self.mtime, "mtime_ns": self.mtime_ns,
                "link": self.link}


def join_path(parent: str, name: str) -> str:
    """``parent/name``, whatever ``parent`` ends with."""
    return parent.rstrip("/") + "/" + name
