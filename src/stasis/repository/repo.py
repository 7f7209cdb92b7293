"""The repository: config, key slots, chunks, disk indexes and manifests.

Object keys (see docs/format.md)::

    config                      JSON, clear, with a MAC under the master key
    keys/<slot>                 JSON key slots wrapping the master secret
    chunks/<aa>/<name>          sealed chunks, name = keyed BLAKE3 of the plaintext
    indexes/<aa>/<name>         sealed disk indexes (roots), named the same way
    pages/<aa>/<name>           sealed index pages (format 2), named the same way
    manifests/<point id>        sealed manifests: writing one commits a point
    holds/<point id>            sealed holds: a point kept past retention
    drills/<name>               sealed drill proofs: the newest drill of a VM or group
    locks/<id>                  shared and exclusive locks
    quarantine/<name>.<time>    chunks that failed verification, moved aside
    renewals/<epoch>            immutable repositories: lock renewals (immutability.py)
    probe/<time>-<random>       immutable repositories: Object Lock probes
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import blake3

from stasis import __version__
from stasis.backends.base import Backend, LockUnsupported, ObjectLocked, Retention
from stasis.errors import (
    AmbiguousPoint,
    BackendAccessDenied,
    BackendError,
    ConfigCorrupt,
    ImmutabilityUnsupported,
    IntegrityError,
    KeySlotError,
    KeySlotsDamaged,
    NotARepository,
    ObjectNotFound,
    PointHeld,
    PointLocked,
    PointNotFound,
    RepositoryExists,
    RepositoryNotFound,
    UnsupportedFormat,
    UsageError,
    WrongPassphrase,
)
from stasis.parallel import ordered_map
from stasis.repository import crypto, objects
from stasis.repository.drills import (
    KIND_DRILL,
    DrillProof,
    DrillProofFormatError,
    proof_key,
    proof_name,
)
from stasis.repository.holds import KIND_HOLD, Hold, HoldFormatError, hold_key
from stasis.repository.immutability import (
    PROBE_S,
    PROBES,
    Immutability,
    old_probes,
    probe_key,
    renewal_key,
    renewal_record,
    renewal_valid,
)
from stasis.repository.index import (
    V1,
    ZERO_NAME,
    DiskIndex,
    IndexFormatError,
    decode_page,
    encode_page,
)
from stasis.repository.locks import LockInfo, LockManager
from stasis.repository.manifest import DiskRecord, Manifest, ManifestFormatError, VmRecord
from stasis.repository.storage import Storage

REPO_FORMAT = "stasis-repository"
REPO_VERSION = 2  # what new repositories get: paged disk indexes
READABLE_VERSIONS = (1, 2)  # 1: whole disk indexes (still written into a v1 repository)
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 64 << 10, 32 << 20
ENCRYPTIONS = ("aes-256-gcm", "none")
_HEX = re.compile(r"^[0-9a-f]+$")
LockContext = contextlib.AbstractContextManager[LockInfo]


class ObjectDamaged(Exception):
    """A stored object failed verification. Callers add point, disk and offset."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass
class Credentials:
    """What the user gave to open a repository. Any may be None."""

    passphrase: bytes | None = None
    keyfile: bytes | None = None
    prompt: Callable[[], bytes] | None = None

    def describe(self) -> str:
        if self.keyfile is not None:
            return "key file"
        return "passphrase"


def _canonical(config: dict[str, Any]) -> bytes:
    return json.dumps(
        {k: v for k, v in config.items() if k != "mac"}, sort_keys=True, separators=(",", ":")
    ).encode()


def stored_whole(backend: Backend, key: str) -> bool:
    """Whether an object stored at ``key`` can be a sealed object: present, and no
    shorter than the smallest a seal makes. A PUT whose client dies after its headers
    leaves an empty object under the key on some S3 servers (SeaweedFS, found by the
    crash matrix), even over a good one; trusted as present, a backup or a copy would
    never write it again and commit a point that cannot be read. One request, as
    ``exists``."""
    try:
        return backend.size(key) >= objects.SMALLEST
    except ObjectNotFound:
        return False


def chunk_key(name: bytes) -> str:
    h = name.hex()
    return f"chunks/{h[:2]}/{h}"


def index_key(name: str) -> str:
    return f"indexes/{name[:2]}/{name}"


def page_key(name: bytes) -> str:
    h = name.hex()
    return f"pages/{h[:2]}/{h}"


def manifest_key(point_id: str) -> str:
    return f"manifests/{point_id}"


def key_fingerprint(master: bytes) -> str:
    """A master key's public fingerprint (config ``key_id``): an HKDF output, so it
    tells nothing of the key but whether two repositories share it."""
    return crypto.derive(master, "key-id", 16).hex()


def new_point_id() -> str:
    return secrets.token_hex(16)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Repository:
    """A repository on a backend (opened from a location by
    :func:`stasis.backends.open_backend`).

    Every backend call goes through :class:`Storage`, which translates the
    backend's errors into :class:`BackendError` and :class:`RepositoryFull`.
    """

    def __init__(self, backend: Backend, config: dict[str, Any], keys: crypto.Keys) -> None:
        self.backend = backend if isinstance(backend, Storage) else Storage(backend)
        self.config = config
        self.keys = keys
        self.sealer = objects.Sealer(
            encrypted=self.encrypted, enc_key=keys.enc, check_key=keys.mac,
            level=objects.parse_compression(str(config.get("compression", "zstd-3"))),
        )
        self.immutability = Immutability.from_config(config)
        if self.immutability is not None:
            # Every delete removes all versions: on a versioned bucket a plain delete
            # only hides an object behind a delete marker.
            self.backend.versioned = True
        self._renewed: int | None = None  # the newest renewal epoch seen
        self.locks = LockManager(self.backend)

    # ----------------------------------------------------------- create / open

    @property
    def id(self) -> str:
        return str(self.config["id"])

    @property
    def chunk_size(self) -> int:
        return int(self.config["chunk_size"])

    @property
    def format_version(self) -> int:
        return int(self.config["version"])

    @property
    def encrypted(self) -> bool:
        return bool(self.config["encryption"] != "none")

    @property
    def url(self) -> str:
        """Where the repository is (its backend's location); its identity is :attr:`id`."""
        return self.backend.url

    @property
    def key_id(self) -> str:
        """The fingerprint of the master key: equal in two repositories exactly when
        they share it (``repo init --copy-key-from``), so their objects are the same
        bytes under the same names. Older configs lack it; it is derived then."""
        return str(self.config.get("key_id") or key_fingerprint(self.keys.master))

    @property
    def key_from(self) -> str | None:
        """The id of the repository whose master key this one was created with."""
        found = self.config.get("key_from")
        return None if found is None else str(found)

    @classmethod
    def init(
        cls,
        backend: Backend,
        *,
        encryption: str = "aes-256-gcm",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compression: str = f"zstd-{objects.ZSTD_LEVEL}",
        passphrase: bytes | None = None,
        keyfile: bytes | None = None,
        kdf: crypto.KdfParams = crypto.DEFAULT_KDF,
        key_from: Repository | None = None,
        immutability: Immutability | None = None,
    ) -> Repository:
        """Create a repository; with ``key_from``, one whose master key (and so its
        chunk-name key) and chunk size are those of ``key_from``, with its own slot.

        With ``immutability``, the store must have Object Lock (a missing bucket is
        created with it) and enforce it: a probe object is locked and its deletion
        tried; :class:`ImmutabilityUnsupported` when the deletion succeeds."""
        if key_from is not None:
            encryption, chunk_size = key_from.config["encryption"], key_from.chunk_size
        if encryption not in ENCRYPTIONS:
            raise UsageError(f"unknown encryption {encryption!r}; choose one of {ENCRYPTIONS}")
        if (
            chunk_size < MIN_CHUNK_SIZE
            or chunk_size > MAX_CHUNK_SIZE
            or chunk_size & (chunk_size - 1)
        ):
            raise UsageError(
                f"chunk size {chunk_size} must be a power of two from 64 KiB to 32 MiB; "
                "nothing was written"
            )
        try:
            objects.parse_compression(compression)
        except ValueError as e:
            raise UsageError(f"{e}; nothing was written") from None
        store = Storage(backend)
        try:
            store.create(object_lock=immutability is not None)
        except FileExistsError:
            raise RepositoryExists(store.url) from None
        except BackendError as e:
            if immutability is not None and isinstance(e.__cause__, LockUnsupported):
                raise ImmutabilityUnsupported(store.url, e.args[2], "Nothing was written.") \
                    from None
            raise
        if immutability is not None:
            _check_lock(store, immutability)
        keys = crypto.Keys.generate() if key_from is None else key_from.keys
        config: dict[str, Any] = {
            "format": REPO_FORMAT,
            "version": REPO_VERSION,
            "id": secrets.token_hex(16),
            "chunk_size": chunk_size,
            "encryption": encryption,
            "compression": compression,
            "chunk_hash": "blake3-keyed",
            "created": utc_now_iso(),
            "created_by": f"stasis {__version__}",
            "key_id": key_fingerprint(keys.master),
        }
        if key_from is not None:
            config["key_from"] = key_from.id
        if immutability is not None:
            config["immutability"] = immutability.to_config()
        if encryption == "none":
            slot = crypto.make_slot(
                slot_id="plain", repo_id=config["id"], master=keys.master, kind="plain",
                secret=None, label="no encryption",
            )
        elif keyfile is not None:
            slot = crypto.make_slot(
                slot_id=secrets.token_hex(4), repo_id=config["id"], master=keys.master,
                kind="keyfile", secret=keyfile, label="key file",
            )
        elif passphrase:
            slot = crypto.make_slot(
                slot_id=secrets.token_hex(4), repo_id=config["id"], master=keys.master,
                kind="passphrase", secret=passphrase, label="initial passphrase", kdf=kdf,
            )
        else:
            raise KeySlotError("an encrypted repository needs a passphrase or a key file")
        config["mac"] = hmac.new(keys.mac, _canonical(config), "sha256").hexdigest()
        # Key slot first, config last: a store with a config is a repository. Of two
        # inits racing on one store, one config put wins (put_if_absent); the other
        # takes its key slot back (it opens nothing there: its wrap names its own id).
        store.put(f"keys/{slot['id']}", json.dumps(slot, indent=1).encode())
        store.sync()
        try:
            store.put_if_absent("config", json.dumps(config, indent=1).encode())
        except FileExistsError:
            store.delete(f"keys/{slot['id']}")
            raise RepositoryExists(store.url) from None
        store.sync()
        repo = cls(store, config, keys)
        if immutability is not None:
            repo.renew_locks()  # nothing to extend yet: the record of this epoch
        return repo

    @staticmethod
    def read_config(backend: Backend) -> dict[str, Any]:
        """The repository's config, checked for form (no key needed; its MAC is
        checked by :meth:`open`)."""
        store = backend if isinstance(backend, Storage) else Storage(backend)
        root = store.url
        config_at = f"{root.rstrip('/')}/config"
        if not store.store_exists():
            raise RepositoryNotFound(root)
        try:
            raw = store.get("config")
        except ObjectNotFound:
            raise NotARepository(root) from None
        # Any other failure is the storage's (a BackendError that says so), not damage.
        try:
            config = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigCorrupt(config_at, f"not readable JSON: {e}") from None
        if not isinstance(config, dict) or config.get("format") != REPO_FORMAT:
            raise ConfigCorrupt(config_at, "it does not describe a Stasis repository")
        if config.get("version") not in READABLE_VERSIONS:
            raise UnsupportedFormat(root, config.get("version"), __version__)
        required = ("id", "chunk_size", "encryption", "mac")
        missing = [k for k in required if k not in config]
        if missing:
            raise ConfigCorrupt(config_at, f"missing {', '.join(missing)}")
        if config["encryption"] not in ENCRYPTIONS or not isinstance(config["chunk_size"], int):
            raise ConfigCorrupt(config_at, "unknown encryption or chunk size")
        try:
            objects.parse_compression(str(config.get("compression", "zstd-3")))
        except ValueError as e:
            raise ConfigCorrupt(config_at, str(e)) from None
        return config

    @classmethod
    def open(cls, backend: Backend, credentials: Credentials | None = None) -> Repository:
        store = backend if isinstance(backend, Storage) else Storage(backend)
        config = cls.read_config(store)
        backend = store
        creds = credentials or Credentials()
        slots, damaged = [], []
        for obj in backend.list("keys/"):
            try:
                slot = json.loads(backend.get(obj.key))
            except ObjectNotFound:
                continue
            except ValueError:
                damaged.append(obj.key)
                continue
            if not isinstance(slot, dict):
                damaged.append(obj.key)
                continue
            slots.append(slot)
        master = cls._unlock(config["id"], slots, creds)
        if master is None and creds.passphrase is None and creds.keyfile is None and creds.prompt:
            creds = Credentials(passphrase=creds.prompt())
            master = cls._unlock(config["id"], slots, creds)
        if master is None and damaged:
            raise KeySlotsDamaged(store.url, creds.describe(), ", ".join(sorted(damaged)))
        if master is None:
            raise WrongPassphrase(store.url, creds.describe())
        keys = crypto.Keys.from_master(master)
        expected = hmac.new(keys.mac, _canonical(config), "sha256").hexdigest()
        if not hmac.compare_digest(expected, str(config["mac"])):
            raise ConfigCorrupt(
                f"{store.url.rstrip('/')}/config",
                "its contents changed since it was written: the MAC does not match",
            )
        return cls(backend, config, keys)

    @staticmethod
    def _unlock(repo_id: str, slots: list[dict[str, Any]], creds: Credentials) -> bytes | None:
        for slot in slots:
            kind = slot.get("kind")
            secret = creds.keyfile if kind == "keyfile" else creds.passphrase
            if kind != "plain" and secret is None:
                continue
            try:
                master = crypto.open_slot(slot, repo_id=repo_id, secret=secret)
            except (KeyError, ValueError):
                continue
            if master is not None:
                return master
        return None

    # ---------------------------------------------------------------- key slots

    def key_slots(self) -> list[dict[str, Any]]:
        """Every key slot: id, kind and label; one that does not parse is listed with
        kind ``damaged`` (its label says what is wrong), so that it can be removed."""
        slots = []
        for obj in self.backend.list("keys/"):
            slot_id = obj.key.rsplit("/", 1)[-1]
            try:
                slot = json.loads(self.backend.get(obj.key))
                slots.append({"id": slot["id"], "kind": slot["kind"],
                              "label": slot.get("label", "")})
            except ObjectNotFound:
                continue  # removed meanwhile
            except (ValueError, TypeError, KeyError) as e:
                slots.append({"id": slot_id, "kind": "damaged",
                              "label": f"not a readable key slot ({type(e).__name__})"})
        return sorted(slots, key=lambda s: s["id"])

    def add_key_slot(
        self, *, kind: str, secret: bytes, label: str, kdf: crypto.KdfParams = crypto.DEFAULT_KDF
    ) -> str:
        if not self.encrypted:
            raise KeySlotError("a repository without encryption has no key slots to add")
        slot_id = secrets.token_hex(4)
        slot = crypto.make_slot(
            slot_id=slot_id, repo_id=self.id, master=self.keys.master, kind=kind,
            secret=secret, label=label, kdf=kdf,
        )
        self.backend.put(f"keys/{slot_id}", json.dumps(slot, indent=1).encode())
        self.backend.sync()
        return slot_id

    def remove_key_slot(self, slot_id: str) -> None:
        slots = {s["id"]: s for s in self.key_slots()}
        if slot_id not in slots:
            raise KeySlotError(f"no key slot {slot_id!r}; 'stasis repo key list' shows them")
        usable = [i for i, s in slots.items() if s["kind"] != "damaged"]
        if usable == [slot_id]:
            raise KeySlotError(
                "refusing to remove the last key slot: the repository could never be opened again"
            )
        self.backend.delete(f"keys/{slot_id}")
        self.backend.sync()

    # ------------------------------------------------------------------ chunks

    def chunk_name(self, data: bytes | memoryview) -> bytes:
        return bytes(blake3.blake3(data, key=self.keys.id).digest())

    def has_chunk(self, name: bytes) -> bool:
        return self._present(chunk_key(name))

    def _put_object(self, key: str, blob: bytes) -> None:
        """Put a chunk, page, root or manifest: under this epoch's lock where the
        repository is immutable."""
        if self.immutability is None:
            self.backend.put(key, blob)
        else:
            self.backend.put_locked(key, blob, self.immutability.target(datetime.now(UTC)))

    def _present(self, key: str) -> bool:
        """Whether a chunk, page or root exists; where the repository is immutable,
        one locked short of this epoch's target is extended to it (its retention
        comes with the lookup: one request unless it needs extending)."""
        if self.immutability is None:
            return stored_whole(self.backend, key)
        try:
            found = self.backend.retention(key)
        except ObjectNotFound:
            return False
        target = self.immutability.target(datetime.now(UTC))
        if found is None or found.until < target.until:
            self.backend.extend_retention(key, target)
        return True

    def store_chunk(self, name: bytes, data: bytes | memoryview) -> int:
        """Seal and store a chunk; return the bytes it takes in the repository."""
        blob = self.seal_chunk(name, data)
        self.put_chunk(name, blob)
        return len(blob)

    def seal_chunk(self, name: bytes, data: bytes | memoryview) -> bytes:
        """The stored form of a chunk (compressed, encrypted), for :meth:`put_chunk`."""
        return self.sealer.seal(objects.KIND_CHUNK, name.hex(), data)

    def put_chunk(self, name: bytes, blob: bytes) -> None:
        self._put_object(chunk_key(name), blob)

    def open_chunk(self, name: bytes, blob: bytes) -> bytes:
        key = chunk_key(name)
        try:
            data = self.sealer.open(objects.KIND_CHUNK, name.hex(), blob)
        except objects.SealError as e:
            raise ObjectDamaged(key, str(e)) from None
        if self.chunk_name(data) != name:
            raise ObjectDamaged(key, "content does not match its name")
        return data

    def load_chunk(self, name: bytes) -> bytes:
        """Read and verify a chunk (tag, decompression, keyed hash)."""
        key = chunk_key(name)
        try:
            blob = self.backend.get(key)
        except ObjectNotFound:
            raise ObjectDamaged(key, "missing") from None
        return self.open_chunk(name, blob)

    def quarantine_chunk(self, name: bytes) -> str:
        """Move a damaged chunk aside so the next backup meeting its data stores it again."""
        key = chunk_key(name)
        dest = f"quarantine/{name.hex()}.{int(time.time())}"
        with contextlib.suppress(ObjectNotFound):
            self.backend.put(dest, self.backend.get(key))
            self.backend.sync()
        self.backend.delete(key)
        return dest

    def upgrade_format(self) -> tuple[int, int]:
        """Move the repository to the newest format; return (before, after).

        Only the config changes: what a format 1 repository holds is read as it is,
        and new points get format 2's paged indexes. A release that reads only format
        1 refuses the repository from then on, with a clear error, rather than
        misreading it.
        """
        before = self.format_version
        if before == REPO_VERSION:
            return before, before
        config = {k: v for k, v in self.config.items() if k != "mac"}
        config["version"] = REPO_VERSION
        config["upgraded"] = utc_now_iso()
        config["mac"] = hmac.new(self.keys.mac, _canonical(config), "sha256").hexdigest()
        self.backend.put("config", json.dumps(config, indent=1).encode())
        self.backend.sync()
        self.config = config
        return before, REPO_VERSION

    # ----------------------------------------------------------------- indexes

    def page_name(self, plain: bytes) -> bytes:
        return blake3.blake3(plain, key=self.keys.id).digest()

    def store_page(self, entries: bytes) -> bytes:
        """Store one index page (unless present); return its name."""
        plain = encode_page(entries)
        name = self.page_name(plain)
        key = page_key(name)
        if not self._present(key):
            self._put_object(key, self.sealer.seal(objects.KIND_PAGE, name.hex(), plain))
        return name

    def load_page(self, name: bytes) -> bytes:
        """One index page's entries, verified (tag, decoding, name)."""
        key = page_key(name)
        try:
            plain = self.sealer.open(objects.KIND_PAGE, name.hex(), self.backend.get(key))
        except ObjectNotFound:
            raise ObjectDamaged(key, "missing") from None
        except objects.SealError as e:
            raise ObjectDamaged(key, str(e)) from None
        if self.page_name(plain) != name:
            raise ObjectDamaged(key, "content does not match its name")
        try:
            return decode_page(plain)
        except IndexFormatError as e:
            raise ObjectDamaged(key, str(e)) from None

    def page_emitter(self) -> Callable[[int, bytes], bytes | None]:
        """What an IndexBuilder hands its pages to: stored as they fill in a format 2
        repository, held for the one object of a format 1 repository."""
        if self.format_version == V1:
            return lambda _k, _entries: None
        return lambda _k, entries: self.store_page(entries)

    def store_index(self, index: DiskIndex) -> str:
        """Store a disk index (its pages first, in format 2); return its name."""
        if self.format_version == V1:
            plain = index.encode_v1()
        else:
            stored = {k: self.store_page(entries) for k, entries in index.held_pages().items()}
            plain = index.stored_as(stored).encode_root()
        name = blake3.blake3(plain, key=self.keys.id).hexdigest()
        if not self._present(index_key(name)):
            self._put_object(index_key(name), self.sealer.seal(objects.KIND_INDEX, name, plain))
        return str(name)

    def load_index(self, name: str, where: str = "") -> DiskIndex:
        """A disk index; its pages are read when an entry of them is asked for.

        A damaged root is :class:`ObjectDamaged`; a damaged page, found later, is an
        :class:`IntegrityError` naming ``where`` (the point and disk it belongs to).
        """
        key = index_key(name)
        try:
            plain = self.sealer.open(objects.KIND_INDEX, name, self.backend.get(key))
        except ObjectNotFound:
            raise ObjectDamaged(key, "missing") from None
        except objects.SealError as e:
            raise ObjectDamaged(key, str(e)) from None
        if blake3.blake3(plain, key=self.keys.id).hexdigest() != name:
            raise ObjectDamaged(key, "content does not match its name")
        of = where or f"the disk index {name[:16]}"

        def fetch(page: bytes) -> bytes:
            try:
                return self.load_page(page)
            except ObjectDamaged as e:
                raise IntegrityError(
                    f"An index page of {of} is damaged ({e.key}: {e.reason}). Other disks "
                    "and points are not affected; 'stasis verify' lists what references it."
                ) from None

        try:
            return DiskIndex.decode(plain, fetch)
        except IndexFormatError as e:
            raise ObjectDamaged(key, str(e)) from None

    def index_pages(self, index: DiskIndex) -> list[bytes]:
        """The stored pages an index references (not the all-zero ones)."""
        return [n for n in index.page_names() if n is not None and n != ZERO_NAME]

    def load_disk_index(self, point: Manifest, vm: VmRecord, disk: DiskRecord) -> DiskIndex:
        """The index of one disk of a point; damage is an IntegrityError naming them."""
        try:
            return self.load_index(disk.index, where=f"point {point.id[:12]}, VM {vm.name}, "
                                   f"disk {disk.name}")
        except ObjectDamaged as e:
            raise IntegrityError(
                f"The disk index of point {point.id[:12]}, VM {vm.name}, disk {disk.name} "
                f"is damaged ({e.reason}). Other disks and points are not affected."
            ) from None

    # --------------------------------------------------------------- manifests

    def commit(self, manifest: Manifest) -> None:
        """Store a manifest: the point exists from here on.

        Callers must have stored (durably) every chunk and index it references.
        """
        key = manifest_key(manifest.id)
        self.backend.sync()  # every chunk and index it names is durable first
        if self.immutability is not None:
            self.ensure_renewed()  # what it inherits unread is locked long enough
        self._put_object(
            key, self.sealer.seal(objects.KIND_MANIFEST, manifest.id, manifest.encode())
        )
        self.backend.sync()

    def point_ids(self) -> list[str]:
        """The committed points. A manifest object shorter than any sealed object is a
        commit that never happened: the PUT of a backup whose store went away under it
        (SeaweedFS leaves a 0-byte object then, see :func:`stored_whole`); that backup
        failed and said nothing was committed."""
        ids = []
        for obj in self.backend.list("manifests/"):
            pid = obj.key.rsplit("/", 1)[-1]
            if _HEX.match(pid) and obj.size >= objects.SMALLEST:
                ids.append(pid)
        return ids

    def load_manifest(self, point_id: str) -> Manifest:
        key = manifest_key(point_id)
        try:
            plain = self.sealer.open(objects.KIND_MANIFEST, point_id, self.backend.get(key))
            manifest = Manifest.decode(plain)
        except ObjectNotFound:
            raise ObjectDamaged(key, "missing") from None
        except (objects.SealError, ManifestFormatError) as e:
            raise ObjectDamaged(key, str(e)) from None
        if manifest.id != point_id:
            raise ObjectDamaged(key, "manifest id does not match its name")
        return manifest

    def points(
        self, *, on_damaged: Callable[[str, ObjectDamaged], None] | None = None
    ) -> list[Manifest]:
        """Every committed point, oldest first. Damaged manifests go to ``on_damaged``."""
        found = []
        for pid in self.point_ids():
            try:
                found.append(self.load_manifest(pid))
            except ObjectDamaged as e:
                if on_damaged is not None:
                    on_damaged(pid, e)
        return sorted(found, key=lambda m: (m.time, m.id))

    def resolve(self, spec: str, points: list[Manifest] | None = None) -> Manifest:
        """A point by id, unique id prefix, or NAME@latest."""
        spec = spec.strip()
        if "@" in spec:
            name, _, which = spec.rpartition("@")
            if which != "latest":
                raise PointNotFound(spec)
            candidates = [m for m in (points or self.points()) if m.name == name]
            if not candidates:
                raise PointNotFound(spec)
            return candidates[-1]
        if not spec or not _HEX.match(spec.lower()):
            raise PointNotFound(spec)
        ids = [pid for pid in self.point_ids() if pid.startswith(spec.lower())]
        if not ids:
            raise PointNotFound(spec)
        if len(ids) > 1:
            shown = ", ".join(sorted(i[:12] for i in ids)[:5])
            raise AmbiguousPoint(spec, len(ids), shown)
        return self.load_manifest(ids[0])

    def latest(self, name: str) -> Manifest | None:
        candidates = [m for m in self.points() if m.name == name]
        return candidates[-1] if candidates else None

    # ------------------------------------------------------------ holds, removal

    def holds(self) -> dict[str, Hold]:
        """Every hold by point id, expired ones too (the caller judges them at its now).

        A hold object that cannot be opened is returned as a damaged hold without
        end: a point is never left unprotected because its hold was unreadable.
        """
        found: dict[str, Hold] = {}
        for obj in self.backend.list("holds/"):
            pid = obj.key.rsplit("/", 1)[-1]
            if not _HEX.match(pid):
                continue
            with contextlib.suppress(ObjectNotFound):  # released meanwhile
                found[pid] = self._load_hold(pid)
        return found

    def _load_hold(self, point_id: str) -> Hold:
        key = hold_key(point_id)
        try:
            hold = Hold.decode(self.sealer.open(KIND_HOLD, point_id, self.backend.get(key)))
        except (objects.SealError, HoldFormatError) as e:
            return Hold(point=point_id, until=None, reason=f"damaged hold object ({e})",
                        damaged=True)
        if hold.point != point_id:
            return Hold(point=point_id, until=None, damaged=True,
                        reason="damaged hold object (it names another point)")
        return hold

    def hold_of(self, point_id: str) -> Hold | None:
        if not self.backend.exists(hold_key(point_id)):
            return None
        try:
            return self._load_hold(point_id)
        except ObjectNotFound:
            return None  # released meanwhile

    def hold(
        self, point_id: str, until: datetime | None, reason: str = "", *,
        by: str = "", created: datetime | None = None,
    ) -> Hold:
        """Keep a committed point past retention until ``until`` (None: until released).

        Holding a held point replaces its hold (one whole-object write).
        """
        if not _HEX.match(point_id) or not self.backend.exists(manifest_key(point_id)):
            raise PointNotFound(point_id)
        hold = Hold(point=point_id, until=until, reason=reason, by=by,
                    created=created or datetime.now(UTC))
        self.backend.put(hold_key(point_id), self.sealer.seal(KIND_HOLD, point_id, hold.encode()))
        self.backend.sync()
        return hold

    def release(self, point_id: str) -> Hold | None:
        """Remove a point's hold; return it, or None when the point was not held."""
        hold = self.hold_of(point_id)
        if hold is not None:
            self.backend.delete(hold_key(point_id))
            self.backend.sync()
        return hold

    # ------------------------------------------------------------ drill proofs

    def record_drill(self, proof: DrillProof) -> None:
        """Make ``proof`` the newest drill of its subject (one whole-object write)."""
        name = proof_name(self.keys.id, proof.subject_kind, proof.subject)
        self.backend.put(proof_key(name), self.sealer.seal(KIND_DRILL, name, proof.encode()))
        self.backend.sync()

    def drill_proof(self, subject_kind: str, subject: str, *,
                    on_damaged: Callable[[str, ObjectDamaged], None] | None = None
                    ) -> DrillProof | None:
        """The newest drill of one VM or group; None when there is none, or it does not
        open (a damaged proof is as good as none: the next drill replaces it; it goes to
        ``on_damaged``)."""
        name = proof_name(self.keys.id, subject_kind, subject)
        key = proof_key(name)
        try:
            proof = DrillProof.decode(self.sealer.open(KIND_DRILL, name,
                                                       self.backend.get(key)))
            if (proof.subject_kind, proof.subject) != (subject_kind, subject):
                raise DrillProofFormatError("it names another VM or group")
        except ObjectNotFound:
            return None
        except (objects.SealError, DrillProofFormatError) as e:
            if on_damaged is not None:
                on_damaged(name, ObjectDamaged(key, str(e)))
            return None
        return proof

    def drill_proofs(self, *, on_damaged: Callable[[str, ObjectDamaged], None] | None = None
                     ) -> list[DrillProof]:
        """The newest drill of every VM and group drilled from this repository. A proof
        that does not open (or that names another subject than its name says) goes to
        ``on_damaged`` and is left out."""
        found = []
        for obj in self.backend.list("drills/"):
            name = obj.key.rsplit("/", 1)[-1]
            if not _HEX.match(name):
                continue
            try:
                proof = DrillProof.decode(self.sealer.open(KIND_DRILL, name,
                                                           self.backend.get(obj.key)))
                if proof_name(self.keys.id, proof.subject_kind, proof.subject) != name:
                    raise DrillProofFormatError("it names another VM or group")
            except ObjectNotFound:
                continue  # replaced meanwhile
            except (objects.SealError, DrillProofFormatError) as e:
                if on_damaged is not None:
                    on_damaged(name, ObjectDamaged(obj.key, str(e)))
                continue
            found.append(proof)
        return sorted(found, key=lambda p: (p.subject_kind, p.subject))

    def remove_point(self, point_id: str, *, now: datetime | None = None) -> None:
        """Delete a point: its manifest, then its (expired) hold.

        Deleting the manifest is the one step that matters: from then on the point
        does not exist. Its chunks and indexes stay until garbage collection finds
        them unreferenced. A point held at ``now`` is refused with PointHeld.
        """
        if not _HEX.match(point_id) or not self.backend.exists(manifest_key(point_id)):
            raise PointNotFound(point_id)
        hold = self.hold_of(point_id)
        if hold is not None and hold.active(now or datetime.now(UTC)):
            raise PointHeld(point_id[:12], hold.describe(), point_id[:12])
        until = self.locked_until(point_id)
        if until is not None:
            raise PointLocked(point_id[:12], until.isoformat(timespec="seconds"))
        try:
            self.backend.delete(manifest_key(point_id))
        except ObjectLocked as e:  # its lock was extended since it was looked up
            raise PointLocked(point_id[:12], e.until.isoformat(timespec="seconds")
                              if e.until else "a later date") from None
        self.backend.sync()
        if hold is not None:
            self.backend.delete(hold_key(point_id))
            self.backend.sync()

    # ------------------------------------------------------------ immutability

    def locked_until(self, point_id: str) -> datetime | None:
        """Until when the storage keeps a point's manifest from being removed (None:
        removable now, or the repository is not immutable)."""
        if self.immutability is None:
            return None
        try:
            found = self.backend.retention(manifest_key(point_id))
        except ObjectNotFound:
            return None
        if found is None or found.until <= datetime.now(UTC):
            return None
        return found.until

    def ensure_renewed(self, now: datetime | None = None) -> None:
        """Make sure a renewal of this epoch or the previous one exists (running one
        when none does): a commit relies on it for what it inherits unread."""
        imm = self._immutable()
        epoch = imm.epoch(now or datetime.now(UTC))
        if self._renewed is not None and self._renewed >= epoch - 1:
            return
        for e in (epoch, epoch - 1):
            try:
                raw = self.backend.get(renewal_key(e))
            except ObjectNotFound:
                continue
            if renewal_valid(self.keys.mac, raw, e):
                self._renewed = e
                return
        self.renew_locks(now)

    def renew_locks(self, now: datetime | None = None, *,
                    workers: int | None = None) -> dict[str, Any]:
        """Extend the lock of every object of every committed point to this epoch's
        target (a held point's to its hold's end when that is later), then record the
        renewal. One request per distinct object; damaged points are counted and
        skipped (verify reports them)."""
        imm = self._immutable()
        now = now or datetime.now(UTC)
        target = imm.target(now)
        holds = self.holds()
        wants: list[tuple[datetime, str]] = []
        for pid in self.point_ids():
            until = target.until
            hold = holds.get(pid)
            if hold is not None and hold.active(now) and hold.until is not None:
                until = max(until, hold.until)
            wants.append((until, pid))
        # Longest first: an object shared by several points gets the longest lock
        # among them the first time it is met, and is not visited again.
        wants.sort(reverse=True)
        keys: dict[str, datetime] = {}
        seen_pages: set[bytes] = set()
        damaged = 0
        for until, pid in wants:
            keys.setdefault(manifest_key(pid), until)
            try:
                manifest = self.load_manifest(pid)
                for _vm, disk in manifest.streams():
                    if index_key(disk.index) in keys:
                        continue
                    keys[index_key(disk.index)] = until
                    index = self.load_index(disk.index)
                    if index.held_pages():  # format 1: entries in the index itself
                        for _i, name in index.stored():
                            keys.setdefault(chunk_key(name), until)
                        continue
                    for page in self.index_pages(index):
                        if page in seen_pages:
                            continue
                        seen_pages.add(page)
                        keys[page_key(page)] = until
                        entries = self.load_page(page)
                        for at in range(0, len(entries), 32):
                            name = entries[at:at + 32]
                            if name != ZERO_NAME:
                                keys.setdefault(chunk_key(name), until)
            except (ObjectDamaged, IntegrityError):
                damaged += 1

        def extend(item: tuple[str, datetime]) -> bool:
            key, until = item
            try:
                self.backend.extend_retention(key, Retention(imm.s3_mode, until))
            except BackendError:
                if self.backend.exists(key):
                    raise
                return False  # missing (a quarantined chunk, a point removed meanwhile)
            return True

        extended = sum(1 for _item, ok in ordered_map(extend, list(keys.items()),
                                                      workers=workers, name="lock-renew")
                       if ok)
        epoch = imm.epoch(now)
        self.backend.put(renewal_key(epoch), renewal_record(
            self.keys.mac, epoch=epoch, until=target.until, now=now, points=len(wants),
            objects=extended))
        self._renewed = epoch
        return {"epoch": epoch, "until": target.until.isoformat(timespec="seconds"),
                "points": len(wants), "objects": extended, "damaged": damaged}

    def probe_lock(self, now: datetime | None = None) -> str | None:
        """Whether the storage still enforces Object Lock (None) or what was found
        instead: a bucket without Object Lock (a config copied elsewhere, a server
        that ignores locks, a local directory), or what the repository's own
        credentials could do to a locked probe object. Nothing of the repository is
        changed; a probe the storage keeps is removed by a later probe."""
        imm = self._immutable()
        return _lock_problem(self.backend, imm, now or datetime.now(UTC))

    def _immutable(self) -> Immutability:
        if self.immutability is None:
            raise UsageError(f"the repository at {self.url} is not immutable (it was not "
                             "created with 'stasis repo init --immutable')")
        return self.immutability

    def check_may_delete(self, purpose: str) -> None:
        """Refuse, before any lock is taken or anything deleted, credentials that may
        not delete (an append-only key): ``purpose`` (prune, gc) would fail at its first
        delete and leave its lock object behind, which these credentials cannot remove
        either. The probe deletes a key that never exists: one request."""
        try:
            self.backend.delete(f"locks/may-delete-probe-{secrets.token_hex(8)}")
        except BackendAccessDenied as e:
            url, _doing, reason, _kept = e.args
            raise BackendAccessDenied(
                url, f"the deletes that {purpose} needs", reason,
                f"Nothing was deleted or locked: {purpose} did not start.") from e

    # ------------------------------------------------------------------- locks

    def shared_lock(self, purpose: str, wait: float = 60.0, *,
                    frees_space: bool = False) -> LockContext:
        """``frees_space``: the job deletes (prune), so it may use the space a local
        store sets aside when the store is full."""
        return self.locks.hold("shared", purpose, wait=wait, frees_space=frees_space)

    def exclusive_lock(self, purpose: str, wait: float = 0.0) -> LockContext:
        return self.locks.hold("exclusive", purpose, wait=wait, frees_space=True)

    # ------------------------------------------------------------------- stats

    def chunk_objects(self) -> Iterator[tuple[bytes, int]]:
        for obj in self.backend.list("chunks/"):
            name = obj.key.rsplit("/", 1)[-1]
            if len(name) == 64 and _HEX.match(name):
                yield bytes.fromhex(name), obj.size


_NO_LOCK = ("the storage has no Object Lock enabled (S3 Object Lock can only be enabled when "
            "a bucket is created)")


def _check_lock(store: Storage, imm: Immutability) -> None:
    """Refuse immutability where the store has no Object Lock or does not enforce it."""
    reason = _lock_problem(store, imm, datetime.now(UTC))
    if reason is not None:
        raise ImmutabilityUnsupported(store.url, reason,
                                      "Nothing of the repository was written.")


def _lock_problem(store: Storage, imm: Immutability, now: datetime) -> str | None:
    """None when the store has Object Lock and enforces it, else what is wrong."""
    if not store.object_lock():
        return _NO_LOCK  # no probe written: nothing to leave behind
    try:
        reason = _probe(store, imm, now)
    except BackendError as e:
        if not isinstance(e.__cause__, LockUnsupported):
            raise
        return f"the storage refused a retention: {e.args[2]}"
    return None if reason is None else f"the storage does not enforce Object Lock: {reason}"


def _probe(store: Storage, imm: Immutability, now: datetime) -> str | None:
    reason = store.probe_lock(probe_key(now), Retention(
        imm.s3_mode, now + timedelta(seconds=PROBE_S)))
    # The probes of earlier runs, now unlocked, go (they never pile up).
    for key in old_probes((o.key for o in store.list(PROBES)), now):
        with contextlib.suppress(ObjectLocked, BackendError):
            store.remove(key)
    return reason
