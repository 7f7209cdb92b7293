"""stasis.memory: the allocator tuned for the data path gives back, between jobs, what a
job's threads freed (a long-lived ``stasis serve`` grew without it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# In a process of its own, tuned as the CLI tunes itself: a thread allocates and frees
# 64 MiB of 1 MiB buffers (a job's pipeline); its arena keeps them until released.
JOB = """
import threading
from stasis.memory import release_free_memory, tune_allocator

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))

assert tune_allocator()
pins = []
def job():
    buffers = []
    for _ in range(64):
        buffers.append(bytearray(b"x") * (1 << 20))
        pins.append(bytearray(64 << 10))  # what outlives a job: keeps the buffers apart
    del buffers
before = rss_mib()
t = threading.Thread(target=job)
t.start()
t.join()
kept = rss_mib()
released = release_free_memory()
print(before, kept, rss_mib(), released)
"""


def test_memory_a_job_freed_is_returned_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", JOB], capture_output=True, text=True,
                         check=True).stdout.split()
    before, kept, after = (int(v) for v in out[:3])
    assert kept - before >= 48  # freed, but still resident: what the service accumulated
    assert out[3] == "True"
    assert after - before < 16


# Eight threads allocate at once: glibc gives them arenas of their own unless limited.
ARENAS = """
import ctypes, sys, threading
from stasis.memory import limit_arenas

if sys.argv[1] == "limited":
    assert limit_arenas(2)
barrier = threading.Barrier(8)
held = []
def job():
    barrier.wait()
    held.append([bytearray(256 << 10) for _ in range(8)])
threads = [threading.Thread(target=job) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
f = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(f))
libc.fclose(ctypes.c_void_p(f))
"""


def test_the_service_s_arenas_are_limited(tmp_path: Path) -> None:
    counts = {}
    for mode in ("default", "limited"):
        info = tmp_path / f"{mode}.xml"
        subprocess.run([sys.executable, "-c", ARENAS, mode, str(info)], check=True)
        counts[mode] = info.read_text().count("<heap nr=")
    assert counts["limited"] <= 2 < counts["default"], counts
