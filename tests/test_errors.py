"""The error and warning classes: every one has a code, every code a meaning, and the
message reads without the CLI's words (those are the hint)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import stasis
from stasis import errors
from stasis.errors import (
    CODES_WITHOUT_CLASS,
    EXIT_MEANINGS,
    WARNING_MEANINGS,
    BackupJobLeftRunning,
    PointHeld,
    PointNotFound,
    StasisError,
    error_classes,
    exit_code_table,
    warning_classes,
    warning_code_table,
)

# What only a CLI user can act on: options, environment variables, commands.
CLI_WORDS = re.compile(r"--[a-z]|\$STASIS|'stasis ")


@pytest.fixture(scope="module", autouse=True)
def _every_module() -> None:
    # Error classes defined outside stasis.errors count too: import every module.
    for mod in pkgutil.walk_packages(stasis.__path__, "stasis."):
        if mod.name.startswith(("stasis.testkit", "stasis.catalog.migrations")) \
                or mod.name.endswith("nbdkit_plugin"):
            continue
        importlib.import_module(mod.name)


def test_every_error_class_has_a_code_with_a_meaning() -> None:
    for cls in error_classes():
        assert isinstance(cls.exit_code, int), cls
        assert cls.exit_code in EXIT_MEANINGS, f"{cls.__name__}: code {cls.exit_code}"


def test_every_code_has_a_class_and_the_table_lists_them_all() -> None:
    used = {cls.exit_code for cls in error_classes()}
    assert set(EXIT_MEANINGS) == used | CODES_WITHOUT_CLASS
    table = dict(exit_code_table())
    assert table == EXIT_MEANINGS
    assert all(meaning for meaning in table.values())


def test_codes_of_existing_classes_are_stable() -> None:
    # A script relies on these: a code never changes for an existing class.
    expected = {
        "UsageError": 2, "RepositoryNotFound": 10, "NotARepository": 11, "RepositoryExists": 11,
        "ConfigCorrupt": 12, "UnsupportedFormat": 12, "WrongPassphrase": 13, "KeySlotError": 13,
        "PointNotFound": 14, "DiskNotFound": 14, "VmNotFound": 14, "JobNotFound": 14,
        "PolicyNotFound": 14, "CloneSourceNotFound": 14, "AmbiguousPoint": 15,
        "SourceUnreadable": 16, "TargetExists": 17, "TargetError": 17, "FileTargetExists": 17,
        "RepositoryFull": 18, "IntegrityError": 19, "ObjectNotFound": 19, "Locked": 20,
        "BackendError": 21, "HypervisorError": 22, "JobNotEnded": 22, "VmState": 23,
        "HookFailed": 24, "ConsistencyNotMet": 25, "GroupError": 26, "CatalogError": 27,
        "PointHeld": 28, "PolicyError": 29, "ExportError": 30, "InstantError": 31,
        "FileNotInPoint": 33, "FilesystemUnknown": 34, "AmbiguousVolume": 35,
        "UnsupportedLocation": 36, "Interrupted": 130,
    }
    for name, code in expected.items():
        assert getattr(errors, name).exit_code == code, name


def test_every_warning_class_has_its_own_code_with_a_meaning() -> None:
    classes = warning_classes()
    assert classes
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    assert set(codes) == set(WARNING_MEANINGS)
    assert not set(codes) & set(EXIT_MEANINGS)  # a warning code is never an exit code
    assert dict(warning_code_table()) == WARNING_MEANINGS


def test_messages_hold_no_cli_words_the_hints_do() -> None:
    for cls in [*error_classes(), *warning_classes()]:
        template = (cls.__doc__ or "").strip()
        assert not CLI_WORDS.search(template), f"{cls.__name__}: {template}"
    e = PointNotFound("web@latest")
    assert e.message == "No recovery point matches 'web@latest'."
    assert "'stasis list'" in e.hint
    assert str(e) == f"{e.message} {e.hint}"  # what the CLI prints


def test_hint_is_filled_and_can_be_replaced() -> None:
    held = PointHeld("abc", "held until 2030", "abc")
    assert held.hint == "'stasis release abc' lifts the hold."
    assert StasisError("x", hint="do y").hint == "do y"
    assert PointNotFound("p", hint="GET /points").full_text.endswith("GET /points")


def test_a_warning_carries_code_message_and_hint() -> None:
    w = BackupJobLeftRunning("web", 31, 4, "abc123")
    d = w.to_dict()
    assert d["code"] == 52 and d["kind"] == "BackupJobLeftRunning"
    assert "web" in d["message"] and "committed and complete" in d["message"]
    assert "doctor --fix" in d["hint"] and "doctor" not in d["message"]
