"""The repository's credentials on the pipe an export's plugin inherits, as JSON."""

from __future__ import annotations

import base64
import json
import os

from stasis.repository import Credentials


def read_credentials(fd: int) -> Credentials:
    if fd < 0:
        return Credentials()
    with os.fdopen(fd, "rb") as f:
        raw = json.loads(f.read() or b"{}")
    return Credentials(
        passphrase=base64.b64decode(raw["passphrase"]) if "passphrase" in raw else None,
        keyfile=base64.b64decode(raw["keyfile"]) if "keyfile" in raw else None,
    )


def credentials_json(creds: Credentials) -> bytes:
    raw: dict[str, str] = {}
    if creds.passphrase is not None:
        raw["passphrase"] = base64.b64encode(creds.passphrase).decode()
    if creds.keyfile is not None:
        raw["keyfile"] = base64.b64encode(creds.keyfile).decode()
    return json.dumps(raw).encode()
