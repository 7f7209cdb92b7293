"""Recovery drills: a point's VMs brought up beside the originals with new identities
in an isolated libvirt network, checked, timed (the measured RTO) and torn down.

:func:`run_drill` does one drill (:mod:`.run`); the checks are :mod:`.checks`, the
network :mod:`.network`; what a drill made is recorded as it is made
(:mod:`.record`), so that teardown, and ``stasis doctor`` after a drill killed with
SIGKILL, remove exactly that and nothing else.
"""

from stasis.recovery.drill.checks import CHECK_KINDS, CheckOutcome, CheckSpec, parse_check
from stasis.recovery.drill.record import DrillRecord, debris, drills
from stasis.recovery.drill.run import DrillReport, DrillVm, run_drill

__all__ = [
    "CHECK_KINDS", "CheckOutcome", "CheckSpec", "DrillRecord", "DrillReport", "DrillVm",
    "debris", "drills", "parse_check", "run_drill",
]
