"""The test kit is not part of the product: not in the wheel, not Stasis's errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

from stasis.errors import StasisError
from stasis_testkit.errors import GuestKitError, GuestNotReady

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_stasis_and_not_the_test_kit() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(ROOT / find["where"][0]), include=find["include"])
    assert "stasis" in packages and "stasis.repository" in packages
    assert not [p for p in packages if p.startswith("stasis_testkit")]
    assert (ROOT / "src" / "stasis_testkit" / "__init__.py").exists()


def test_test_kit_failures_are_not_stasis_errors() -> None:
    assert not issubclass(GuestKitError, StasisError)
    e = GuestNotReady("stasis-test-a", 30.0, "no boot marker", "/tmp/console.log")
    assert str(e) == ("Guest stasis-test-a did not become ready within 30 s: no boot marker. "
                      "Its console log is /tmp/console.log.")
