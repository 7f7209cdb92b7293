"""Keys: one master secret, wrapped once per key slot.

The master secret is 64 random bytes. Everything else is derived from it with
HKDF-SHA256 under distinct labels, so one secret never serves two purposes:

- ``enc``: the AES-256-GCM key for chunks, indexes and manifests;
- ``id``: the BLAKE3 key that names chunks (so the store learns nothing from names);
- ``mac``: the key of the config's MAC.

A key slot wraps the master secret with AES-256-GCM under a wrapping key that comes
from a passphrase through Argon2id (memory-hard), or from a key file (32 random
bytes, through HKDF). A repository created with ``--encryption none`` has a single
``plain`` slot holding the master secret in clear: names stay keyed and every
object still carries a keyed checksum, but there is no secrecy.
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER_LEN = 64
KEYFILE_LEN = 32

DEFAULT_KDF_LANES = 2


@dataclass(frozen=True)
class KdfParams:
    """Argon2id's cost for a new passphrase slot; the slot stores them, so opening
    a slot always uses the cost it was made with."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = DEFAULT_KDF_LANES

    def to_slot(self) -> dict[str, Any]:
        return {"name": "argon2id", "memory_kib": self.memory_kib,
                "iterations": self.iterations, "lanes": self.lanes}


# 64 MiB and 3 passes takes about 0.15 s here and makes a guess cost the same memory.
# Nothing in the product lowers it: only tests pass cheaper parameters, in-process.
DEFAULT_KDF = KdfParams()


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def derive(master: bytes, label: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=b"stasis/" + label.encode()
    ).derive(master)


@dataclass(frozen=True)
class Keys:
    """The working keys of an unlocked repository."""

    master: bytes
    enc: bytes
    id: bytes
    mac: bytes

    @classmethod
    def from_master(cls, master: bytes) -> Keys:
        return cls(
            master=master,
            enc=derive(master, "enc"),
            id=derive(master, "id"),
            mac=derive(master, "mac"),
        )

    @classmethod
    def generate(cls) -> Keys:
        return cls.from_master(secrets.token_bytes(MASTER_LEN))


# OpenSSL's Argon2id fails (cryptography raises MemoryError) when two threads of one
# process derive at once; a command derives in a thread beside its other work, so
# derivations take turns.
_KDF_LOCK = threading.Lock()


def passphrase_key(passphrase: bytes, salt: bytes, params: dict[str, Any]) -> bytes:
    if params.get("name") != "argon2id":
        raise ValueError(f"unknown KDF {params.get('name')!r}")
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=int(params["iterations"]),
        lanes=int(params["lanes"]),
        memory_cost=int(params["memory_kib"]),
    )
    with _KDF_LOCK:
        return kdf.derive(passphrase)


def keyfile_key(material: bytes, salt: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"stasis/keyfile"
    ).derive(material)


def make_slot(
    *, slot_id: str, repo_id: str, master: bytes, kind: str, secret: bytes | None, label: str,
    kdf: KdfParams = DEFAULT_KDF,
) -> dict[str, Any]:
    """Wrap ``master`` into a new slot of ``kind`` ('passphrase', 'keyfile' or 'plain')."""
    slot: dict[str, Any] = {"id": slot_id, "kind": kind, "label": label}
    if kind == "plain":
        slot["master"] = b64e(master)
        return slot
    assert secret is not None
    salt = secrets.token_bytes(16)
    if kind == "passphrase":
        params = kdf.to_slot()
        wrapping = passphrase_key(secret, salt, params)
        slot["kdf"] = params
    elif kind == "keyfile":
        wrapping = keyfile_key(secret, salt)
    else:
        raise ValueError(f"unknown key slot kind {kind!r}")
    nonce = secrets.token_bytes(12)
    slot["salt"] = b64e(salt)
    slot["nonce"] = b64e(nonce)
    slot["wrapped"] = b64e(AESGCM(wrapping).encrypt(nonce, master, _slot_aad(repo_id, slot_id)))
    return slot


def open_slot(slot: dict[str, Any], *, repo_id: str, secret: bytes | None) -> bytes | None:
    """Return the master secret if ``secret`` opens ``slot``, else None."""
    kind = slot.get("kind")
    if kind == "plain":
        return b64d(slot["master"])
    if secret is None:
        return None
    salt = b64d(slot["salt"])
    if kind == "passphrase":
        wrapping = passphrase_key(secret, salt, slot["kdf"])
    elif kind == "keyfile":
        wrapping = keyfile_key(secret, salt)
    else:
        return None
    try:
        return AESGCM(wrapping).decrypt(
            b64d(slot["nonce"]), b64d(slot["wrapped"]), _slot_aad(repo_id, slot["id"])
        )
    except InvalidTag:
        return None


def _slot_aad(repo_id: str, slot_id: str) -> bytes:
    return f"stasis-keyslot:{repo_id}:{slot_id}".encode()


def new_keyfile_material() -> bytes:
    return secrets.token_bytes(KEYFILE_LEN)
