"""The one exception hierarchy of Stasis.

Every expected failure is a subclass of :class:`StasisError`. The class carries the
message template (its docstring, filled with the constructor's arguments) and a
stable exit code, so the CLI prints one clear sentence and exits with a code that
scripts can rely on. Messages say what failed, what was kept safe, and what to do
next. The table of codes is printed by ``stasis --help`` from :func:`exit_code_table`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class StasisError(Exception):
    """{}"""

    exit_code: ClassVar[int] = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args)
        self.kwargs = kwargs

    @property
    def message(self) -> str:
        template = (self.__doc__ or "{}").strip()
        try:
            return template.format(*self.args, **self.kwargs)
        except (IndexError, KeyError):
            return " ".join(str(a) for a in self.args) or template

    def __str__(self) -> str:
        return self.message


class UsageError(StasisError):
    """{}"""

    exit_code = 2


class RepositoryNotFound(StasisError):
    """No repository at {}: the path does not exist. Create one with 'stasis repo init --repo PATH', or point --repo / $STASIS_REPO at an existing one."""

    exit_code = 10


class NotARepository(StasisError):
    """{} exists but is not a Stasis repository (no 'config' file). Nothing was read or written there."""

    exit_code = 11


class RepositoryExists(StasisError):
    """{} is not empty; a repository is only created in a new or empty directory. Nothing was written."""

    exit_code = 11


class ConfigCorrupt(StasisError):
    """The repository config at {} is damaged ({}). Nothing was written; the chunks, indexes and manifests are untouched. Restore the 'config' file from a copy of the repository."""

    exit_code = 12


class UnsupportedFormat(StasisError):
    """The repository at {} uses format version {}, which this Stasis ({}) cannot read. Nothing was written; use a newer Stasis."""

    exit_code = 12


class WrongPassphrase(StasisError):
    """No key slot of the repository at {} opens with the {} given. Nothing was read or written. Check $STASIS_PASSPHRASE, --passphrase-file or --key-file."""

    exit_code = 13


class KeySlotError(StasisError):
    """{}"""

    exit_code = 13


class PointNotFound(StasisError):
    """No recovery point matches '{}'. 'stasis list' shows the points; name one by id, unique id prefix, or NAME@latest."""

    exit_code = 14


class AmbiguousPoint(StasisError):
    """'{}' matches {} points ({}); give more characters of the id."""

    exit_code = 15


class DiskNotFound(StasisError):
    """{}"""

    exit_code = 14


class SourceUnreadable(StasisError):
    """Cannot read the source {}: {}. Nothing was written to the repository."""

    exit_code = 16


class TargetExists(StasisError):
    """The restore target {} already exists; it was left untouched. Pass --force to overwrite it, or choose another path."""

    exit_code = 17


class TargetError(StasisError):
    """Cannot write the restore target {}: {}. {}"""

    exit_code = 17


class RepositoryFull(StasisError):
    """The repository's storage is full ({}). The point was not committed and the repository is still usable: chunks already written are reused by the next backup or removed by gc. Free space and run the backup again."""

    exit_code = 18


class IntegrityError(StasisError):
    """{}"""

    exit_code = 19


class Locked(StasisError):
    """The repository at {} is locked by {}. Nothing was written. Wait for that job to finish, or if it died, run the command again after {} when the lock expires."""

    exit_code = 20


class BackendError(StasisError):
    """The repository storage failed: {}. Nothing was committed."""

    exit_code = 21


class Interrupted(StasisError):
    """Interrupted by {}. {}"""

    exit_code = 130


class ObjectNotFound(StasisError):
    """Object {} is missing from the repository."""

    exit_code = 19


def exit_code_table() -> list[tuple[int, str]]:
    """Return (code, meaning) rows for the help text, one per distinct code."""
    rows: dict[int, str] = {0: "success", 1: "unexpected error (a bug: please report it)"}
    meanings = {
        2: "bad usage or arguments",
        10: "no repository at the path",
        11: "the path is not a repository (or not empty at init)",
        12: "the repository config is damaged or of an unknown version",
        13: "wrong passphrase or key file",
        14: "no recovery point, VM or disk matches the name",
        15: "the point name matches more than one point",
        16: "the backup source cannot be read",
        17: "the restore target exists or cannot be written",
        18: "the repository's storage is full",
        19: "integrity error: damaged or missing data found",
        20: "the repository is locked by another job",
        21: "the repository storage failed",
        22: "libvirt failed or cannot be reached",
        23: "the VM is in the wrong state for this (e.g. running for an in-place restore)",
        24: "a pre-backup hook failed: nothing was captured, every VM thawed and resumed",
        25: "the consistency the policy requires was not reached; nothing was committed",
        26: "no such group, or a group of that name exists already",
        27: "the catalog (local state database) cannot be opened or is damaged",
        28: "the point is held: it is kept until the hold ends or is released",
        29: "the policy file is not valid (every problem is listed with its line)",
        30: "an NBD export of a point could not be started, or died",
        31: "no such instant VM, attached disk or linked clone, or it is in the wrong "
            "state for this",
        33: "no such file or volume in the point's disk",
        34: "the volume holds no file system that Stasis reads (ext2/3/4, XFS, FAT, NTFS)",
        35: "the path does not say which volume of a multi-volume disk it is on",
        130: "interrupted by Ctrl-C; nothing was committed",
        143: "interrupted by SIGTERM; nothing was committed",
    }
    rows.update(meanings)
    return sorted(rows.items())


class HypervisorError(StasisError):
    """libvirt failed: {}. {}"""

    exit_code = 22


class JobNotEnded(StasisError):
    """The libvirt backup job of VM {} did not end: it was still running {} s after Stasis asked libvirt to end it ({} times). Run 'stasis doctor --fix', which ends it where libvirt lets it; if it remains, restarting libvirtd ends it (the VM keeps running)."""

    exit_code = 22


class VmNotFound(StasisError):
    """No VM named '{}' at {}. 'stasis vms' lists them."""

    exit_code = 14


class VmState(StasisError):
    """{}"""

    exit_code = 23


class HookFailed(StasisError):
    """{}"""

    exit_code = 24


class ConsistencyNotMet(StasisError):
    """{}"""

    exit_code = 25


class GroupError(StasisError):
    """{}"""

    exit_code = 26


class CatalogError(StasisError):
    """{}"""

    exit_code = 27


class PointHeld(StasisError):
    """Point {} is {}. Nothing was deleted. 'stasis release {}' lifts the hold."""

    exit_code = 28


class JobNotFound(StasisError):
    """No job {} in the catalog. 'stasis jobs' lists them."""

    exit_code = 14


class PolicyNotFound(StasisError):
    """{}"""

    exit_code = 14


class PolicyError(StasisError):
    """The policy file {} was not loaded: {}. Nothing was changed.\n{}"""

    exit_code = 29

    @property
    def problems(self) -> list[Any]:
        """The :class:`stasis.service.policy.Problem` list, one per problem found."""
        return list(self.kwargs.get("problems", []))


class ExportError(StasisError):
    """The NBD export of {} could not be served: {}. The repository was only read; nothing of the export was left running."""

    exit_code = 30


class InstantError(StasisError):
    """{}"""

    exit_code = 31


class CloneSourceNotFound(StasisError):
    """'{}' is neither a recovery point (id, unique id prefix, NAME@latest) nor a VM at {}. Nothing was made. 'stasis list' shows the points, 'stasis vms' the VMs."""

    exit_code = 14


class FileNotInPoint(StasisError):
    """{}"""

    exit_code = 33


class FilesystemUnknown(StasisError):
    """{}"""

    exit_code = 34


class AmbiguousVolume(StasisError):
    """{}"""

    exit_code = 35


class FileTargetExists(StasisError):
    """Not extracted: {} already exist(s) in the target directory. Nothing was written; pass --force to replace them, or choose another --to."""

    exit_code = 17
