"""``python -m stasis_testkit.callkill``: the ``stasis`` CLI run in this process with
every backend it opens wrapped by :mod:`stasis_testkit.faults`, so that the process
SIGKILLs itself (and its process group) at the N-th storage call of the given kinds:
a kill placed inside the work, however short the work is. Stasis itself has no hook
for it; only this test-kit entry point wraps :func:`stasis.backends.open_backend`.

    python -m stasis_testkit.callkill --calls delete --at 7 -- gc --json
    python -m stasis_testkit.callkill --calls put --count-to n.json -- backup image x.raw

With ``--count-to`` and no ``--at`` nothing is killed: the number of matching calls
the run made is written to the file as JSON (``{"calls": n}``), which is how the crash
matrix learns the range its seeded N is drawn from. Every matching call counts, whichever
backend makes it (a copy's source and destination alike).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import stasis.backends
import stasis.backends.registry
from stasis_testkit.faults import CALLS, Fault, FaultyBackend

NEVER = 1 << 62  # a fault that only counts


def wrap_backends(fault: Fault) -> None:
    """Every backend opened from now on in this process passes through ``fault``."""
    opener = stasis.backends.registry.open_backend

    def open_faulty(location):  # type: ignore[no-untyped-def]
        return FaultyBackend(opener(location), [fault])

    stasis.backends.registry.open_backend = open_faulty
    stasis.backends.open_backend = open_faulty


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stasis_testkit.callkill",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--calls", default="put", help=f"comma-separated, of: {', '.join(CALLS)}")
    ap.add_argument("--prefix", default="", help="only calls on keys under this prefix")
    ap.add_argument("--at", type=int, default=None, help="SIGKILL at this matching call")
    ap.add_argument("--count-to", type=Path, default=None,
                    help="write the number of matching calls made here at the end")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the stasis arguments")
    ns = ap.parse_args(argv)
    stasis_args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    fault = Fault("kill", calls=tuple(c for c in ns.calls.split(",") if c), prefix=ns.prefix,
                  at=ns.at if ns.at is not None else NEVER)
    wrap_backends(fault)
    from stasis.cli.main import run

    sys.argv = ["stasis", *stasis_args]
    try:
        run()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if ns.count_to is not None:
            ns.count_to.write_text(json.dumps({"calls": fault.seen}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
