"""The one reader of ``/proc/PID/stat``: a live process has a start time, an ended one none."""

from __future__ import annotations

import os
import subprocess
import time

from stasis.repository.process import start_time, start_token


def test_a_live_process_has_a_start_time_and_an_ended_one_none() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        started = start_time(proc.pid)
        assert isinstance(started, int) and started > 0
        assert start_token(proc.pid) == str(started)
        assert start_time(proc.pid) == started  # the same process, the same start
        assert start_time(os.getpid()) != started
        proc.kill()
        deadline = time.monotonic() + 5
        while start_time(proc.pid) is not None:  # a zombie until reaped: not running
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert start_token(proc.pid) == ""
    finally:
        proc.kill()
        proc.wait()
    assert start_time(proc.pid) is None


def test_a_command_name_with_spaces_and_parentheses_is_skipped_whole() -> None:
    # The process renames itself so that its name holds ") (", as any program's may.
    script = ("import sys, time; open('/proc/self/comm', 'w').write('a) (b c'); "
              "print(flush=True); time.sleep(30)")
    proc = subprocess.Popen(["python3", "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        with open(f"/proc/{proc.pid}/stat") as f:
            assert f.read().startswith(f"{proc.pid} (a) (b c) ")
        started = start_time(proc.pid)
        assert isinstance(started, int) and started > 0
    finally:
        proc.kill()
        proc.wait()


def test_no_process_is_none() -> None:
    assert start_time(0) is None and start_time(-1) is None
    assert start_token(0) == ""
