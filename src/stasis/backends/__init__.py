"""Backends: dumb object stores with one small interface.

A backend stores opaque objects under slash-separated keys. It knows nothing of
chunks, encryption or manifests. Every implementation must pass the conformance
suite in ``tests/backends/test_conformance.py`` unchanged.
"""

from __future__ import annotations

from stasis.backends.base import Backend, ObjectInfo
from stasis.backends.local import LocalBackend

__all__ = ["Backend", "LocalBackend", "ObjectInfo"]
