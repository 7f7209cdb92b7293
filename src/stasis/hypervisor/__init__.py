"""Hypervisor: libvirt connections, domains, checkpoints and backup jobs.

Knows libvirt and QEMU; knows nothing of chunks or manifests (the protection
layer joins the two).
"""
