"""Failures of the test-guest kit.

They are not Stasis's errors: a guest that does not boot or a workload that finds the
wrong data says something about the test machine or the test, not "a bug in Stasis",
so they have their own base. Like Stasis's errors, the class docstring is the message
template, filled with the constructor's arguments.
"""

from __future__ import annotations

from typing import ClassVar


class GuestKitError(Exception):
    """{}"""

    # `python -m stasis_testkit` exits with this code on the error.
    exit_code: ClassVar[int] = 1

    @property
    def message(self) -> str:
        template = (self.__doc__ or "{}").strip()
        try:
            return template.format(*self.args)
        except (IndexError, KeyError):
            return " ".join(str(a) for a in self.args) or template

    def __str__(self) -> str:
        return self.message


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
