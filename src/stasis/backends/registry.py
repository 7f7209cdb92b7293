"""Open a backend from a repository location: a local path or a URL.

A location with a scheme (``word:`` before anything else, as in ``file:///srv/r``
or ``s3://bucket/r``) is a URL, opened by the entry of :data:`SCHEMES` for that
scheme; a scheme without an entry is refused with :class:`UnsupportedLocation`,
never taken as a relative path (``s3://bucket/x`` would otherwise be the local
directory ``s3:``). Anything else is a local path. A relative path whose first
part holds a colon is written ``./name`` to be taken as a path.

Adding a backend is one entry in :data:`SCHEMES`: a function from the parsed URL
to a :class:`Backend`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import SplitResult, unquote, urlsplit

from stasis.backends.base import Backend
from stasis.backends.local import LocalBackend
from stasis.backends.s3 import open_s3
from stasis.errors import UnsupportedLocation, UsageError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _file(url: SplitResult, location: str) -> Backend:
    if url.netloc not in ("", "localhost"):
        raise UsageError(f"'{location}' names the host '{url.netloc}': a file:// URL names "
                         "a directory of this host (file:///path); nothing was read or written")
    path = unquote(url.path)
    if not path.startswith("/"):
        raise UsageError(f"'{location}' is not an absolute file:// URL (file:///path); "
                         "nothing was read or written")
    return LocalBackend(path)


SCHEMES: dict[str, Callable[[SplitResult, str], Backend]] = {
    "file": _file,
    "s3": open_s3,
}


def scheme_of(location: str) -> str | None:
    """The URL scheme of ``location`` (lower case), or None for a local path."""
    m = _SCHEME.match(location)
    return m.group(1).lower() if m else None


def open_backend(location: str | os.PathLike[str]) -> Backend:
    """The backend for a repository location (a path or a URL of :data:`SCHEMES`).

    Nothing is read or written: whether a repository is there is the repository's
    question. Raises :class:`UnsupportedLocation` for a URL of another scheme.
    """
    if not isinstance(location, str):
        return LocalBackend(location)  # a Path is a path, whatever its characters
    if not location:
        raise UsageError("no repository given; nothing was read or written",
                         hint="Pass --repo or set $STASIS_REPO.")
    scheme = scheme_of(location)
    if scheme is None:
        return LocalBackend(location)
    opener = SCHEMES.get(scheme)
    if opener is None:
        raise UnsupportedLocation(location, scheme, ", ".join(
            ["a local path"] + [f"{s}://" for s in sorted(SCHEMES)]))
    return opener(urlsplit(location), location)
