"""Test guests for Stasis's own tests, demo and benchmarks.

Small libvirt VMs that boot in seconds without KVM: the host's Debian cloud kernel,
a busybox initramfs built on the machine (:mod:`.boot`), 1–3 virtio disks of known
content (:mod:`.disks`), a console log with a boot marker and a command channel on
a second serial port (:mod:`.control`), and a workload whose writes date the
content of a disk to one instant (:mod:`.workload`). With ``guest_agent=True`` a real
QEMU guest agent (the host's qemu-ga, put in the initramfs) answers on the
``org.qemu.guest_agent.0`` channel, through libvirt as for any VM: fsfreeze of the
guest's mounted disks (its root is the initramfs, never frozen, so commands still
run meanwhile) and guest-exec, for filesystem-consistent backups and in-guest hooks.
Not part of the product: a top-level package of its own, left out of the wheel
(importable from the source tree by tests, the demo and benches); nothing in Stasis
imports it, and its failures (:mod:`.errors`) are not Stasis's errors.
``python -m stasis_testkit --help`` for the CLI.

    with GuestKit() as kit:
        g = kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB)])
        g.wait_ready()
        status, output = g.run("cat /proc/partitions")

        g = kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB, ext4_from=SAMPLE)],
                       guest_agent=True)
        g.wait_ready()  # waits for the agent too
        g.run("mkdir /mnt/a && mount -t ext4 /dev/vda /mnt/a", check=True)
        g.domain.fsFreeze()  # 1: /mnt/a
        g.domain.fsThaw()
"""

from stasis_testkit.boot import READY_MARKER, BootFiles, build_boot_files
from stasis_testkit.control import CommandResult
from stasis_testkit.disks import (
    SAMPLE,
    DiskSpec,
    GiB,
    KiB,
    MiB,
    image_info,
    read_image,
    sample_tree,
    tree_manifest,
)
from stasis_testkit.errors import (
    GuestCommandFailed,
    GuestCommandTimeout,
    GuestKitError,
    GuestNotReady,
    SeqLogMismatch,
)
from stasis_testkit.guest import (
    DEFAULT_DISKS,
    DEFAULT_PREFIX,
    Guest,
    GuestDisk,
    GuestInfo,
    GuestKit,
    default_kit_dir,
)
from stasis_testkit.workload import (
    SeqLog,
    SeqLogTarget,
    SeqLogWorkload,
    check_seqlog,
    read_regions,
    seq_block,
)

__all__ = [
    "DEFAULT_DISKS",
    "DEFAULT_PREFIX",
    "READY_MARKER",
    "SAMPLE",
    "BootFiles",
    "CommandResult",
    "DiskSpec",
    "GiB",
    "Guest",
    "GuestCommandFailed",
    "GuestCommandTimeout",
    "GuestDisk",
    "GuestInfo",
    "GuestKit",
    "GuestKitError",
    "GuestNotReady",
    "KiB",
    "MiB",
    "SeqLog",
    "SeqLogMismatch",
    "SeqLogTarget",
    "SeqLogWorkload",
    "build_boot_files",
    "check_seqlog",
    "default_kit_dir",
    "image_info",
    "read_image",
    "read_regions",
    "sample_tree",
    "seq_block",
    "tree_manifest",
]
