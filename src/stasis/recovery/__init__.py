"""Recovery: restore of disks (now), whole VMs, files, instant recovery and clones (next)."""
