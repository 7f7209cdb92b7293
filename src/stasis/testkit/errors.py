"""Failures of the test-guest kit, in the project's one exception hierarchy."""

from __future__ import annotations

from stasis.errors import StasisError


class GuestKitError(StasisError):
    """{}"""


class BootFilesError(GuestKitError):
    """Cannot build the test guest's boot files: {}. Install linux-image-cloud-amd64 and busybox-static, or pass the kernel explicitly."""  # noqa: E501


class DiskSpecError(GuestKitError):
    """Bad test disk specification {!r}: {}. Write it as TARGET:FORMAT:SIZE[:ext4[=DIR]], e.g. vdb:qcow2:64M."""  # noqa: E501


class GuestNotReady(GuestKitError):
    """Guest {} did not become ready within {:.0f} s: {}. Its console log is {}."""


class GuestCommandTimeout(GuestKitError):
    """Command in guest {} did not finish within {:.0f} s: {!r}. The guest may still be running it; later commands wait behind it."""  # noqa: E501


class GuestCommandFailed(GuestKitError):
    """Command in guest {} exited with status {}: {!r}. Output: {}"""


class SeqLogMismatch(GuestKitError):
    """The disks do not hold a state the sequential-log workload passed through: {}"""
