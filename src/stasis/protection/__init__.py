"""Protection: backups (disk images now, live VMs and groups next) and verification.

Reads sources through :mod:`stasis.blockio`, stores through :mod:`stasis.repository`.
"""
