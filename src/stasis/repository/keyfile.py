"""Key files: the secret of a key slot kept in a file instead of a passphrase.

A key file is two words: the header ``stasis-keyfile-v1`` and the secret in base64.
It is written once, private (0600), fsynced, and never over an existing file.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from stasis.errors import KeySlotError

KEYFILE_HEADER = "stasis-keyfile-v1"


def read_key_file(path: Path) -> bytes:
    try:
        lines = path.read_text().split()
    except (OSError, UnicodeDecodeError) as e:
        raise KeySlotError(f"cannot read the key file {path}: {e}") from None
    if len(lines) != 2 or lines[0] != KEYFILE_HEADER:
        raise KeySlotError(f"{path} is not a Stasis key file")
    try:
        return base64.b64decode(lines[1], validate=True)
    except ValueError:
        raise KeySlotError(f"{path} is not a Stasis key file (bad base64)") from None


def write_key_file(path: Path, material: bytes) -> None:
    if path.exists():
        raise KeySlotError(f"{path} exists; a new key file is never written over an old one")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{KEYFILE_HEADER}\n{base64.b64encode(material).decode()}\n")
        f.flush()
        os.fsync(f.fileno())
