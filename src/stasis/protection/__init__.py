"""Protection: taking points and checking them.

Backups of disk images (:mod:`.backup`), of one VM (:mod:`.vm`) and of a group of
VMs at one instant (:mod:`.capture`), with the consistency levels and hooks around
that instant (:mod:`.consistency`, :mod:`.hooks`, and :mod:`.guardian`, which resumes
suspended VMs if Stasis dies), group membership
(:mod:`.groups`), change tracking (:mod:`.chain`), verification (:mod:`.verify`)
and the debris of interrupted backups (:mod:`.doctor`). It reads sources through
:mod:`stasis.blockio` and :mod:`stasis.hypervisor`, stores through
:mod:`stasis.repository`, and does not import recovery.
"""
