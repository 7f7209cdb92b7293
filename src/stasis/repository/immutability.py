"""Immutability: every object a point needs, under an S3 Object Lock retention.

A repository made with ``repo init --immutable DAYS`` records in its config
``immutability = {mode, retain_s, margin_s}`` and from then on writes every chunk,
index page, index root and manifest with a retention (:data:`LOCKED_PREFIXES`), so
that for at least ``retain_s`` after a point is committed nobody, its own credentials
included, can delete or overwrite (a new version never replaces a locked one) what
it needs. Everything else (``config``, ``keys/``, ``locks/``, ``holds/``,
``quarantine/``, ``renewals/``, ``probe/``) stays deletable: it is mutable by design.

How long, without a request per object per backup
-------------------------------------------------

Time is cut into *epochs* of ``margin_s`` seconds (from the Unix epoch). What is
written, or found present and extended, in epoch *k* is locked until
``target(k) = start(k + 2) + retain_s``. A point committed at *t* in epoch *k* needs
its objects locked until ``t + retain_s``, which ``target(k)`` exceeds. Its objects
are of three kinds:

- written by this run: put with ``target(k)``, no extra request;
- found present (a chunk looked up, a page or root that exists): the lookup is a
  HEAD that returns the object's retain-until, so only those locked short of
  ``target(k)`` (written in an older epoch, or garbage of a removed point) cost a
  PutObjectRetention;
- inherited from the base point without a lookup (unchanged pages, unchanged
  entries of a changed page): covered by the *renewal* rule below.

A *renewal* extends every object of every committed point to ``target(k)`` (held
points to their hold's end when that is later) and records it in
``renewals/<k>``, a JSON object with a MAC under the repository's key (so a writer
without the key cannot forge one; deleting it only causes another renewal). A
commit in epoch *k* requires a renewal of epoch *k* or *k - 1*, and runs one itself
when there is none. Then every inherited object is locked until ``target(k - 1) =
start(k + 1) + retain_s`` at least, later than ``t + retain_s``: either its point
was committed before that renewal (which extended it) or after it (in epoch *k - 1*
or *k*, whose writes and finds are locked at least that long). Renewals also run from
``stasis repo lock-extend`` and after prune, so a backup seldom pays for one: the
cost is one request per object of the repository per epoch, and per backup only its
new objects (no request of their own) and the stale ones it finds.

Removal: an object is removed with all its versions (a plain delete on a versioned
bucket only hides it behind a delete marker); a version still locked is refused by
the storage, and prune and gc report it with its date rather than fail.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stasis.backends.base import Retention

LOCKED_PREFIXES = ("chunks/", "pages/", "indexes/", "manifests/")
RENEWALS = "renewals/"
PROBES = "probe/"
MODES = ("compliance", "governance")
PROBE_S = 60  # a probe's lock: long enough for its delete to be tried inside it
PROBE_KEEP_S = 2 * PROBE_S  # older probes are removed by the next one (lock ended)
MAX_MARGIN_S = 7 * 86400


def default_margin(retain_s: int) -> int:
    """A quarter of the lock, at most a week: objects stay locked at most
    ``retain_s + 2 × margin`` after their last renewal, and renewals run once a margin."""
    return max(1, min(MAX_MARGIN_S, retain_s // 4))


@dataclass(frozen=True)
class Immutability:
    """A repository's immutability settings (config ``immutability``)."""

    mode: str  # "compliance" | "governance"
    retain_s: int  # every point's objects are locked at least this long after its commit
    margin_s: int  # an epoch: renewals run once per epoch

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Immutability | None:
        found = config.get("immutability")
        if not isinstance(found, dict):
            return None
        return cls(mode=str(found["mode"]), retain_s=int(found["retain_s"]),
                   margin_s=int(found["margin_s"]))

    def to_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "retain_s": self.retain_s, "margin_s": self.margin_s}

    @property
    def s3_mode(self) -> str:
        return self.mode.upper()

    def epoch(self, now: datetime) -> int:
        return int(now.timestamp()) // self.margin_s

    def target(self, now: datetime) -> Retention:
        """The retention of what is written or extended at ``now``."""
        end = (self.epoch(now) + 2) * self.margin_s + self.retain_s
        return Retention(self.s3_mode, datetime.fromtimestamp(end, UTC))

    def describe(self) -> str:
        days = self.retain_s / 86400
        span = f"{days:g} days" if days >= 1 else f"{self.retain_s} s"
        return f"{self.mode} lock of {span}"


def is_locked_key(key: str) -> bool:
    return key.startswith(LOCKED_PREFIXES)


def renewal_key(epoch: int) -> str:
    return f"{RENEWALS}{epoch}"


def renewal_record(mac_key: bytes, *, epoch: int, until: datetime, now: datetime,
                   points: int, objects: int) -> bytes:
    body: dict[str, Any] = {"epoch": epoch, "until": until.isoformat(timespec="seconds"),
                            "time": now.isoformat(timespec="seconds"), "points": points,
                            "objects": objects}
    body["mac"] = _mac(mac_key, body)
    return json.dumps(body, sort_keys=True).encode()


def renewal_valid(mac_key: bytes, raw: bytes, epoch: int) -> bool:
    """Whether ``raw`` is this repository's renewal record of ``epoch``."""
    try:
        body = json.loads(raw)
        mac = str(body.pop("mac"))
    except (ValueError, KeyError, AttributeError, TypeError):
        return False
    return body.get("epoch") == epoch and hmac.compare_digest(mac, _mac(mac_key, body))


def _mac(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, b"stasis-renewal:" + text, "sha256").hexdigest()


def probe_key(now: datetime) -> str:
    return f"{PROBES}{int(now.timestamp())}-{secrets.token_hex(4)}"


def old_probes(keys: Iterable[str], now: datetime) -> list[str]:
    """The probe objects whose lock has ended (named by their creation time)."""
    old = []
    cutoff = now - timedelta(seconds=PROBE_KEEP_S)
    for key in keys:
        stamp = key[len(PROBES):].split("-", 1)[0]
        if stamp.isdigit() and datetime.fromtimestamp(int(stamp), UTC) < cutoff:
            old.append(key)
    return old
