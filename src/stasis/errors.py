"""The one exception hierarchy of Stasis, and the warnings of what succeeds anyway.

Every expected failure is a subclass of :class:`StasisError`. The class carries the
message template (its docstring, filled with the constructor's arguments) and a
stable exit code, so an interface prints one clear sentence and exits with a code
that scripts can rely on. The message says what failed and what was kept safe, in
words that read right over any interface; what to do next in the CLI's words (an
option, a command to run) is the separate :attr:`StasisError.hint`, which the CLI
prints after the message and an API replaces by its own.

What succeeds but deserves attention (a post hook failed, the job could not be
recorded, a libvirt job outlived its backup) is a :class:`StasisWarning`: a code
of its own range, a message and a hint the same way, carried by the result
(``Manifest.run_warnings``, a job's result) rather than raised.

The table of exit codes, printed by ``stasis --help``, is generated from the
classes by :func:`exit_code_table`; each code's meaning is written once, in
:data:`EXIT_MEANINGS`.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

_T = TypeVar("_T")


class _Explained:
    """A message template (the docstring) and a CLI hint template, both filled with
    the constructor's arguments. ``hint=`` given to the constructor replaces the
    class's hint."""

    cli_hint: ClassVar[str] = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    _hint: str | None

    def _fill(self, template: str, fallback: str | None = None) -> str:
        try:
            return template.format(*self.args, **self.kwargs)
        except (IndexError, KeyError):
            if fallback is not None:
                return fallback
            return " ".join(str(a) for a in self.args) or template

    @property
    def message(self) -> str:
        """What failed (or what went wrong in a success) and what was kept safe."""
        return self._fill((type(self).__doc__ or "{}").strip())

    @property
    def hint(self) -> str:
        """What to do next, in the CLI's words ('' when there is nothing to add)."""
        if self._hint is not None:
            return self._hint
        return self._fill(self.cli_hint, "") if self.cli_hint else ""

    @property
    def full_text(self) -> str:
        """The message and the hint, as the CLI prints them."""
        return f"{self.message} {self.hint}" if self.hint else self.message


class StasisError(_Explained, Exception):
    """{}"""

    exit_code: ClassVar[int] = 1

    def __init__(self, *args: Any, hint: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args)
        self.kwargs = kwargs
        self._hint = hint

    def __str__(self) -> str:
        return self.full_text


class StasisWarning(_Explained):
    """{}"""

    code: ClassVar[int] = 50

    def __init__(self, *args: Any, hint: str | None = None, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self._hint = hint

    def __str__(self) -> str:
        return self.full_text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, StasisWarning) and type(other) is type(self)
                and other.message == self.message and other.hint == self.hint)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.message))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "kind": type(self).__name__, "message": self.message,
                "hint": self.hint}


class UsageError(StasisError):
    """{}"""

    exit_code = 2


class RepositoryNotFound(StasisError):
    """No repository at {}: it does not exist (no such directory, bucket or prefix)."""

    exit_code = 10
    cli_hint = ("Create one with 'stasis repo init --repo PATH', or point --repo / "
                "$STASIS_REPO at an existing one.")


class NotARepository(StasisError):
    """{} exists but is not a Stasis repository (no 'config' file). Nothing was read or written there."""

    exit_code = 11


class RepositoryExists(StasisError):
    """{} is not empty; a repository is only created in a new or empty directory. Nothing was written."""

    exit_code = 11


class ConfigCorrupt(StasisError):
    """The repository config at {} is damaged ({}). Nothing was written; the chunks, indexes and manifests are untouched."""

    exit_code = 12
    cli_hint = "Restore the 'config' file from a copy of the repository."


class UnsupportedFormat(StasisError):
    """The repository at {} uses format version {}, which this Stasis ({}) cannot read. Nothing was written."""

    exit_code = 12
    cli_hint = "Use a newer Stasis."


class WrongPassphrase(StasisError):
    """No key slot of the repository at {} opens with the {} given. Nothing was read or written."""

    exit_code = 13
    cli_hint = ("Check $STASIS_PASSPHRASE, --passphrase-file or --key-file. If they are "
                "right, the repository's config may be damaged (its id is bound into every "
                "key slot): compare it with a copy of the repository.")


class KeySlotsDamaged(WrongPassphrase):
    """No readable key slot of the repository at {} opens with the {} given, and {} cannot be read (damaged): the key may be in it. Nothing was read or written."""

    cli_hint = ("Open the repository with another passphrase or key file and remove the "
                "damaged slot (stasis repo key list, key remove), or bring keys/ back from "
                "a copy of the repository.")


class KeySlotError(StasisError):
    """{}"""

    exit_code = 13


class PointNotFound(StasisError):
    """No recovery point matches '{}'."""

    exit_code = 14
    cli_hint = ("'stasis list' shows the points; name one by id, unique id prefix, or "
                "NAME@latest.")


class AmbiguousPoint(StasisError):
    """'{}' matches {} points ({})."""

    exit_code = 15
    cli_hint = "Give more characters of the id."


class DiskNotFound(StasisError):
    """{}"""

    exit_code = 14


class SourceUnreadable(StasisError):
    """Cannot read the source {}: {}. Nothing was written to the repository."""

    exit_code = 16


class TargetExists(StasisError):
    """The restore target {} already exists; it was left untouched."""

    exit_code = 17
    cli_hint = "Pass --force to overwrite it, or choose another path."


class TargetError(StasisError):
    """Cannot write the restore target {}: {}. {}"""

    exit_code = 17


class BackendError(StasisError):
    """The repository storage at {} failed {}: {}. {}"""

    exit_code = 21
    cli_hint = ("Check the storage (mount, permissions, network) and run the command "
                "again; 'stasis verify' checks the repository.")

    def leaving(self, consequence: str) -> BackendError:
        """The same failure, saying also what it left of the caller's work (a restore
        target); a new error, to raise ``from`` this one."""
        if len(self.args) != 4:  # no sentence on what was kept (RepositoryFull)
            return type(self)(*self.args, hint=self._hint, **self.kwargs)
        *head, kept = self.args  # every other class of the family ends with it
        return type(self)(*head, f"{kept} {consequence}", hint=self._hint)

    def instead(self, kept: str) -> BackendError:
        """The same failure, with what it left said by the caller, who knows more
        than the one call did (a read that failed mid-backup did not leave the
        repository unchanged: the backup had written chunks)."""
        if len(self.args) != 4:
            return self
        *head, _kept = self.args
        return type(self)(*head, kept, hint=self._hint)


class BackendAccessDenied(BackendError):
    """The repository storage at {} refused {}: access denied ({}). {}"""

    exit_code = 41
    cli_hint = ("These credentials may not do this: check the bucket policy and the user's "
                "permissions. An append-only key may put, get and list but not delete, so "
                "prune and gc need the maintenance credentials.")


class BackendCredentialsRejected(BackendError):
    """The repository storage at {} rejected the credentials while {} ({}). {}"""

    exit_code = 42
    cli_hint = ("Check the access key and secret (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the URL's profile=, the AWS "
                "credentials file) and that they have not expired.")


class BackendClockSkew(BackendError):
    """The repository storage at {} refused {}: this host's clock is too far from the server's ({}). {}"""

    exit_code = 43
    cli_hint = "Set this host's clock (NTP) and run the command again."


class BackendUnreachable(BackendError):
    """The repository storage at {} cannot be reached while {} ({}). {}"""

    exit_code = 44
    cli_hint = ("Check the endpoint (the URL's endpoint=, AWS_ENDPOINT_URL, the profile's "
                "endpoint_url), the network, and that the server runs.")


class BackendStoreMissing(BackendError):
    """The repository storage at {0} has no such bucket ({2}) while {1}. {3}"""

    exit_code = 10
    cli_hint = ("Check the bucket's name and the endpoint; 'stasis repo init' creates a "
                "missing bucket.")


class RepositoryFull(BackendError):
    """The repository's storage is full ({}). What this step wrote was not committed and the repository is still usable: chunks already written are reused by the next backup or removed by gc."""

    exit_code = 18
    cli_hint = ("Free space (prune and gc run on a full repository: a local one keeps space "
                "aside for them) and run the command again.")


class IntegrityError(StasisError):
    """{}"""

    exit_code = 19


class Locked(StasisError):
    """The repository at {} is locked by {}. Nothing was written."""

    exit_code = 20
    cli_hint = ("Wait for that job to finish, or if it died, run the command again after "
                "{2} when the lock expires.")


class UnsupportedLocation(StasisError):
    """'{}' is a URL of the scheme '{}', which this Stasis does not open as a repository (it opens {}). Nothing was read or written; it was not taken as a local path."""

    exit_code = 36
    cli_hint = ("Give --repo / $STASIS_REPO a local path, a file:// or an s3:// URL (a "
                "relative path with a colon in its first part is written ./NAME).")


class KeyMismatch(StasisError):
    """{}"""

    exit_code = 39


class CopyRefused(StasisError):
    """{}"""

    exit_code = 40


class Interrupted(StasisError):
    """Interrupted by {}. {}"""

    exit_code = 130


class ObjectNotFound(StasisError):
    """Object {} is missing from the repository."""

    exit_code = 19


class HypervisorError(StasisError):
    """libvirt failed: {}. {}"""

    exit_code = 22


class JobNotEnded(StasisError):
    """The libvirt backup job of VM {} did not end: it was still running {} s after Stasis asked libvirt to end it ({} times)."""

    exit_code = 22
    cli_hint = ("Run 'stasis doctor --fix', which ends it where libvirt lets it; if it "
                "remains, restarting libvirtd ends it (the VM keeps running).")


class VmNotFound(StasisError):
    """No VM named '{}' at {}."""

    exit_code = 14
    cli_hint = "'stasis vms' lists them."


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


class GroupNotFound(GroupError):
    """{}"""


class CatalogError(StasisError):
    """{}"""

    exit_code = 27


class PointHeld(StasisError):
    """Point {} is {}. Nothing was deleted: the point is kept until its hold ends or is released."""

    exit_code = 28
    cli_hint = "'stasis release {2}' lifts the hold."


class JobNotFound(StasisError):
    """No job {} in the catalog."""

    exit_code = 14
    cli_hint = "'stasis jobs' lists them."


class JobStateError(StasisError):
    """{}"""

    exit_code = 37


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


class ConfigFileError(StasisError):
    """The config file {} was not loaded: {}. Nothing was done.\n{}"""

    exit_code = 38

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


class InstantNotFound(InstantError):
    """{}"""


class CloneSourceNotFound(StasisError):
    """'{}' is neither a recovery point (id, unique id prefix, NAME@latest) nor a VM at {}. Nothing was made."""

    exit_code = 14
    cli_hint = "'stasis list' shows the points, 'stasis vms' the VMs."


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
    """Not extracted: {} already exist(s) in the target directory. Nothing was written."""

    exit_code = 17
    cli_hint = "Pass --force to replace them, or choose another --to."


class ImmutabilityUnsupported(StasisError):
    """{} cannot be made immutable: {}. {}"""

    exit_code = 47
    cli_hint = ("Immutability needs S3 Object Lock that the server enforces (AWS S3, Ceph "
                "RGW, SeaweedFS, MinIO), and Object Lock is enabled when a bucket is "
                "created: give 'stasis repo init --immutable' a new bucket name and Stasis "
                "creates it so, or create the bucket with Object Lock yourself.")


class PointLocked(StasisError):
    """Point {} is locked by the storage until {}: it cannot be removed before then. Nothing was deleted."""

    exit_code = 48
    cli_hint = "Run prune again after that date (the repository was made with --immutable)."


# ------------------------------------------------------------------ the server's access


class NotAuthenticated(StasisError):
    """{}"""

    exit_code = 60


class PermissionDenied(StasisError):
    """This needs the permission {!r}, which {} does not have. Nothing was done."""

    exit_code = 61

    @property
    def permission(self) -> str:
        return str(self.args[0])


class TargetNotAllowed(PermissionDenied):
    """Tenant '{}' may not restore to the {} {}: it restores only to {}. Nothing was restored."""

    exit_code = 67
    cli_hint = "An admin sets where a tenant may restore to (its restore dirs and networks)."

    @property
    def permission(self) -> str:
        return "restores:run"


class TooManyAttempts(StasisError):
    """{}"""

    exit_code = 62


class RequestTooLarge(StasisError):
    """{}"""

    exit_code = 63


class IdempotencyConflict(StasisError):
    """{}"""

    exit_code = 64


class AccountError(StasisError):
    """{}"""

    exit_code = 65


class AccountNotFound(StasisError):
    """{}"""

    exit_code = 66


class RangeNotSatisfiable(StasisError):
    """The range asked for is outside the file: {}. Nothing was sent."""

    exit_code = 68
    cli_hint = "Ask for bytes below the file's size, or for the whole file."


class ServerUnreachable(StasisError):
    """The Stasis server at {} cannot be reached ({}). Nothing was done."""

    exit_code = 69
    cli_hint = ("Check --server / $STASIS_SERVER, that 'stasis serve --listen' runs there, "
                "and --ca-bundle / $STASIS_CA_BUNDLE for a server whose certificate a "
                "private CA signed.")


class PoliciesFromFile(StasisError):
    """The service runs the policies of the file {}: a policy changed here would be undone by that file at the next start, so nothing was changed."""

    exit_code = 70
    cli_hint = ("Edit the file (and restart serve), or run 'stasis serve' without "
                "--policies to keep the policies in the catalog, where the API edits them.")


class ArchiveRefused(StasisError):
    """The archive from {} was not extracted: {}. Nothing was written in the target directory."""

    exit_code = 69
    cli_hint = ("Run the command again; if it fails the same way, what answers at the server's "
                "address does not send archives as a Stasis server does.")


# ------------------------------------------------------------------ recovery drills (issue 17)


class DrillFailed(StasisError):
    """The drill of {} failed: check {} on VM {} did not pass: {} {} The originals and the point were not touched."""

    exit_code = 73
    cli_hint = "The drill's job log has each check's output: 'stasis job show ID --log'."


class DrillNetworkRefused(StasisError):
    """The libvirt network '{}' is not isolated ({}): a drill brings copies of production VMs up with their production identities inside, and must not reach the production networks. Nothing was made."""

    exit_code = 74
    cli_hint = ("Give --network a name that is free (the drill creates an isolated "
                "network of that name) or that names a network without <forward>.")


class DrillInProgress(StasisError):
    """A drill of {} is running already ({}): two drills of the same VMs at once would compete for the host and prove nothing more. Nothing was made."""

    exit_code = 75
    cli_hint = "Wait for it to end ('stasis jobs'), then run the drill again."


# ------------------------------------------------------------------ warnings


class PostHookFailed(StasisWarning):
    """The post hook on {} ({!r}) {}; the point is committed and complete: the hook ran after the capture."""

    code = 50
    cli_hint = "The hook's output is in the job log: 'stasis job show ID --log'."


class NotRecorded(StasisWarning):
    """This run is not recorded as a job: {} The work itself was done as asked."""

    code = 51
    cli_hint = "Check --catalog / $STASIS_CATALOG; 'stasis catalog rebuild' indexes the points again."


class BackupJobLeftRunning(StasisWarning):
    """The libvirt backup job of VM {} did not end: it was still running {} s after Stasis asked libvirt to end it ({} times). The point {} itself is committed and complete."""

    code = 52
    cli_hint = JobNotEnded.cli_hint


class NotImmutable(StasisWarning):
    """The repository {} is not immutable any more: {}. Nothing was changed: its points are as they were, but the storage no longer stops anyone deleting them."""

    code = 56
    cli_hint = ("Check the bucket's Object Lock and the server; until it enforces locks "
                "again, keep a copy of the points elsewhere ('stasis copy').")


# ------------------------------------------------------------------ the tables

#: The meaning of every exit code, written once. A code keeps its meaning for good.
EXIT_MEANINGS: dict[int, str] = {
    0: "success (with the warnings printed, if any)",
    1: "unexpected error (a bug: please report it)",
    2: "bad usage or arguments",
    10: "no repository at the path (or its bucket does not exist)",
    11: "the path is not a repository (or not empty at init)",
    12: "the repository config is damaged or of an unknown version",
    13: "wrong passphrase or key file",
    14: "no recovery point, VM, disk, job or policy matches the name",
    15: "the point name matches more than one point",
    16: "the backup source cannot be read",
    17: "the restore target exists or cannot be written",
    18: "the repository's storage is full",
    19: "integrity error: damaged or missing data found",
    20: "the repository is locked by another job",
    21: "the repository storage failed (a read or a write)",
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
    36: "the repository URL's scheme is not supported",
    41: "the repository storage denied the operation to these credentials (e.g. a delete "
        "by an append-only key)",
    42: "the repository storage rejected the credentials (unknown key, wrong secret, "
        "expired, or none)",
    43: "the repository storage refused the request: this host's clock is off",
    44: "the repository storage cannot be reached (wrong endpoint, network, server down)",
    37: "the job cannot be queued or cancelled now (no service runs, or the job ended "
        "or runs on another host)",
    38: "the config file is not valid or cannot be read (every problem is listed with its "
        "line)",
    39: "the destination's key is not the one expected (repo init --copy-key-from, or a "
        "copy to a repository made with it)",
    40: "the two repositories cannot be copied between (chunk size or format); nothing "
        "was written",
    47: "the storage cannot make the repository immutable (no Object Lock, or one that "
        "it does not enforce); nothing was written",
    48: "the point is locked by the storage (Object Lock) until a later date",
    60: "the server did not know who asked: no token or session, an unknown, expired or "
        "revoked one, or a wrong password",
    61: "the user or token lacks the permission the operation needs; nothing was done",
    62: "too many failed sign-ins from this user or address; try again later",
    63: "the request body was larger than the server accepts; nothing was done",
    64: "an Idempotency-Key was used again with another request; nothing was done",
    65: "a user, token, tenant or role could not be created or changed as asked; nothing "
        "was changed",
    66: "no such user, token, tenant or role; nothing was changed",
    67: "a tenant asked to restore to a place (path, storage or network) it is not "
        "allowed to; nothing was restored",
    68: "the byte range asked for is outside the file; nothing was sent",
    69: "the Stasis server (--server) cannot be reached or answered something that is not "
        "its API (wrong URL, server down, TLS refused, an archive cut short or unsafe to "
        "extract); nothing was done",
    70: "the service runs the policies of a file: policies are edited there, not through "
        "the API; nothing was changed",
    73: "a recovery drill's check did not pass; what the drill made was removed again",
    74: "a recovery drill was refused a network that is not isolated; nothing was made",
    75: "a drill of the same VMs is running already; nothing was made",
    130: "interrupted by Ctrl-C; nothing was committed",
    143: "interrupted by SIGTERM; nothing was committed",
}

#: Codes no error class carries: success, and the signal that the CLI turns into an exit.
CODES_WITHOUT_CLASS = frozenset({0, 143})

#: The meaning of every warning code (the command still exits 0).
WARNING_MEANINGS: dict[int, str] = {
    50: "a post-backup hook failed; the point is committed and complete",
    51: "the run is not recorded in the catalog; the work itself was done",
    52: "a libvirt backup job outlived its backup; the point is complete",
    56: "the repository is not immutable any more: verify's Object Lock probe found the "
        "storage does not enforce its locks",
}


def _subclasses(cls: type[_T]) -> list[type[_T]]:
    found: list[type[_T]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found += _subclasses(sub)
    return found


def error_classes() -> list[type[StasisError]]:
    """StasisError and every subclass of it (those defined elsewhere too)."""
    return [StasisError, *_subclasses(StasisError)]


def warning_classes() -> list[type[StasisWarning]]:
    return _subclasses(StasisWarning)


def exit_code_table() -> list[tuple[int, str]]:
    """(code, meaning) rows for the help text: every code an error class carries,
    and success and SIGTERM, each with its meaning from :data:`EXIT_MEANINGS`."""
    codes = {c.exit_code for c in error_classes()} | CODES_WITHOUT_CLASS
    return sorted((code, EXIT_MEANINGS[code]) for code in codes)


def warning_code_table() -> list[tuple[int, str]]:
    """(code, meaning) rows of the warnings, generated from the warning classes."""
    return sorted({(c.code, WARNING_MEANINGS[c.code]) for c in warning_classes()})
