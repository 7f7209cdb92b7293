"""Recovery: points brought back.

Disks (:mod:`.restore`), whole VMs and groups (:mod:`.vm`, :mod:`.group`), files
read straight from a point (:mod:`.files`), disks served over NBD (:mod:`.export`),
instant VMs and attached disks (:mod:`.instant`) and clones of points
(:mod:`.clone`); random access to a point's disk goes through one verified chunk
reader (:mod:`.diskread`). It does not import protection: what needs both, such as
a clone of a VM's present state, is in :mod:`stasis.app`.
"""
