#!/usr/bin/env python3
"""Screenshots of every page of the web console, light and dark, at 1280 px wide, into
docs/console/ (the PNGs docs/console.md shows).

It runs the console's own browser tests with $STASIS_CONSOLE_SHOTS set: the flow on a
real guest (tests/console/test_console_vm.py), the editors, wizards and admin pages
(test_console_editors.py), instant recovery (test_console_instant.py) and the second
wave's data pages (test_console_data.py) screenshot each page they reach, in both
themes, so the pictures show real data and stay what the tests check. Run as
root on a machine ./scripts/setup prepared (libvirt, Debian's chromium):

    .venv/bin/python bench/console_screenshots.py            # about 2 min
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "console"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    env = {**os.environ, "STASIS_CONSOLE_SHOTS": str(OUT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/console/test_console_vm.py", "tests/console/test_console.py",
                           "tests/console/test_console_editors.py",
                           "tests/console/test_console_instant.py",
                           "tests/console/test_console_data.py",
                           "-k", "real_guest or wrong_password or editors or instant "
                           "or test_console_data"],
                          cwd=ROOT, env=env)
    shots = sorted(p.name for p in OUT.glob("*.png"))
    print(f"{len(shots)} screenshots in {OUT}: {', '.join(shots)}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
