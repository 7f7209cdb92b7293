"""Password hashes: Argon2id, encoded with their parameters and salt.

A hash is the PHC string ``$argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>`` (unpadded
base64), so each one is checked with the cost it was made with, and a hash made with
another cost than today's is rehashed at the next successful sign-in. New hashes cost
64 MiB and 3 passes (about 0.15 s, like a repository's passphrase slot), unless
``$STASIS_PASSWORD_COST`` says otherwise (``m=KIB,t=PASSES,p=LANES``, any of the
three): a setting for small hosts (and the test suite), weakening every hash made
while it is lower.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from stasis.errors import UsageError
from stasis.repository.crypto import passphrase_key

COST_ENV = "STASIS_PASSWORD_COST"
_PHC = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


@dataclass(frozen=True)
class Cost:
    """Argon2id's parameters: memory in KiB, passes, lanes."""

    m: int = 65536
    t: int = 3
    p: int = 2

    def params(self) -> dict[str, object]:
        return {"name": "argon2id", "memory_kib": self.m, "iterations": self.t,
                "lanes": self.p}


def current_cost() -> Cost:
    """The cost of new hashes: the defaults, with ``$STASIS_PASSWORD_COST``'s values."""
    text = os.environ.get(COST_ENV, "").strip()
    if not text:
        return Cost()
    values: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        if key not in ("m", "t", "p") or not value.isdigit() or int(value) < 1:
            raise UsageError(f"${COST_ENV} is {text!r}: write m=KIB,t=PASSES,p=LANES "
                             "(positive integers, e.g. m=65536,t=3,p=2); no password "
                             "was hashed.")
        values[key] = int(value)
    cost = Cost(**values)
    if cost.m < 8 * cost.p:
        raise UsageError(f"${COST_ENV}: Argon2id needs at least 8 KiB of memory per lane "
                         f"(m={cost.m}, p={cost.p}); no password was hashed.")
    return cost


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: bytes, salt: bytes, cost: Cost) -> bytes:
    return passphrase_key(password, salt, cost.params())


def hash_password(password: bytes, cost: Cost | None = None) -> str:
    """The encoded Argon2id hash of ``password`` with a new 16-byte salt."""
    cost = current_cost() if cost is None else cost
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, cost)
    return f"$argon2id$v=19$m={cost.m},t={cost.t},p={cost.p}${_b64(salt)}${_b64(digest)}"


def _parsed(encoded: str) -> tuple[Cost, bytes, bytes] | None:
    m = _PHC.fullmatch(encoded)
    if m is None:
        return None
    return Cost(int(m[1]), int(m[2]), int(m[3])), _unb64(m[4]), _unb64(m[5])


@lru_cache(maxsize=4)
def _decoy(cost: Cost) -> str:
    return hash_password(secrets.token_bytes(16), cost)


def verify_password(password: bytes, encoded: str | None) -> bool:
    """Whether ``password`` matches ``encoded`` (compared in constant time). With no
    hash (an unknown user), a decoy of today's cost is checked instead, so that the
    answer takes the same time."""
    parsed = _parsed(encoded) if encoded is not None else None
    if parsed is None:
        cost = current_cost()
        parsed = _parsed(_decoy(cost))
        assert parsed is not None
        _derive(password, parsed[1], cost)
        return False
    cost, salt, digest = parsed
    return hmac.compare_digest(_derive(password, salt, cost), digest)


def needs_rehash(encoded: str) -> bool:
    """The hash was made with another cost than today's."""
    parsed = _parsed(encoded)
    return parsed is None or parsed[0] != current_cost()
