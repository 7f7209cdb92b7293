"""``stasis`` run inside the test process: the same entry point (``stasis.cli.main.run``),
its environment, arguments, standard streams and exit code, without the ~0.8 s that a
new Python process and its imports cost each time.

Subprocess runs stay for what needs a process of its own: signals, kill -9, several
commands at once, a process's environment stripped to nothing.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import traceback


def run(args: list[str], env: dict[str, str], input: str | None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``stasis ARGS`` with exactly ``env``."""
    from stasis.cli import main

    saved_env = dict(os.environ)
    saved_argv = sys.argv
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_signals = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["stasis", *args]
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
    main._signal_seen.clear()
    code = 0
    try:
        main.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # what the interpreter would print for an uncaught error
        traceback.print_exc(file=err)
        code = 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_signals[0])
        signal.signal(signal.SIGINT, saved_signals[1])
    return code, out.getvalue(), err.getvalue()
