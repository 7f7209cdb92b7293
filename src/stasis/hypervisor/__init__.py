"""Hypervisor: libvirt connections, domains, checkpoints and backup jobs.

Knows libvirt and QEMU; knows nothing of chunks or manifests (the protection
layer joins the two).

The package itself loads nothing (libvirt is loaded by :mod:`.libvirt_api`), so that
a command can name the default URI without loading libvirt.
"""

DEFAULT_URI = "qemu:///system"
