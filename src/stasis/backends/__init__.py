"""Backends: dumb object stores with one small interface.

A backend stores opaque objects under slash-separated keys. It knows nothing of
chunks, encryption or manifests. :func:`open_backend` opens one from a location (a
local path or a URL, one entry per scheme in :mod:`stasis.backends.registry`).
Every implementation must pass the conformance suite in
``tests/backends/test_conformance.py`` unchanged.
"""

from __future__ import annotations

from stasis.backends.base import Backend, Leftover, ObjectInfo
from stasis.backends.local import LocalBackend
from stasis.backends.registry import SCHEMES, open_backend, scheme_of

__all__ = ["SCHEMES", "Backend", "Leftover", "LocalBackend", "ObjectInfo", "open_backend",
           "scheme_of"]
