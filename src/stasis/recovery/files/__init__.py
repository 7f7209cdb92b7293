"""Files from a point, read straight from the repository without restoring the disk.

A disk of a point is read through :class:`~stasis.recovery.diskread.DiskReader`
(chunk by chunk, through a bounded cache). Its volumes (:mod:`.volumes`: the whole
disk, partitions, LVM logical volumes) and their file systems (:mod:`.filesystems`:
ext2/3/4, XFS, FAT, NTFS, through dissect's pure-Python modules, no mount and no
root) are found by :class:`DiskFiles` (:mod:`.diskfiles`), which lists, finds and
reads the files (:class:`Entry`, :mod:`.entry`); :func:`extract`
(:mod:`.extraction`) copies them out, never writing outside its target directory.
"""

from __future__ import annotations

from stasis.recovery.files.diskfiles import DiskFiles, read_file
from stasis.recovery.files.entry import Entry
from stasis.recovery.files.extraction import ExtractResult, extract
from stasis.recovery.files.filesystems import KINDS, Filesystem, Node, open_filesystem
from stasis.recovery.files.volumes import Volume, find_volumes

__all__ = [
    "KINDS", "DiskFiles", "Entry", "ExtractResult", "Filesystem", "Node", "Volume", "extract",
    "find_volumes", "open_filesystem", "read_file",
]
