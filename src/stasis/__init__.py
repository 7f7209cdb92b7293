"""Stasis: backup and disaster recovery for libvirt/KVM virtual machines.

Layers, imports pointing down only (docs/architecture.md; checked by lint-imports):
``cli`` → ``app`` : ``service`` → ``catalog`` → ``protection`` | ``recovery`` →
``hypervisor`` | ``blockio`` → ``repository`` → ``backends`` → shared utilities
(``errors``, ``progress``, ``parallel``, ``memory``, ``settings``, ``clock``,
``signals``, ``rundirs``).
"""

__version__ = "0.1.0"
