"""Stasis: backup and disaster recovery for libvirt/KVM virtual machines.

Layers, imports pointing down only (see DESIGN.md): ``cli`` → ``service`` →
``protection`` / ``recovery`` → ``blockio`` (and later ``hypervisor``) →
``repository`` → ``backends``.
"""

__version__ = "0.1.0"
