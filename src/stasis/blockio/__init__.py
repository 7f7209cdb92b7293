"""Block I/O: NBD exports of images and devices, readers, writers and extents.

Every backup source and every restore target is an NBD export served by qemu-nbd
(or, for live VMs, by QEMU itself through libvirt). libnbd reads and writes it,
one connection per worker thread, and ``block_status`` tells which ranges hold data.
"""
