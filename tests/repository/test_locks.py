"""Locks: shared locks coexist, an exclusive one stands alone, stale ones expire."""

from __future__ import annotations

import json
import subprocess

import pytest

from stasis.errors import Locked
from stasis.repository import Repository
from stasis.repository.locks import STALE_AFTER, LockInfo, LockManager


def test_shared_locks_coexist_and_exclusive_waits_for_them(repo: Repository) -> None:
    with repo.shared_lock("backup a"), repo.shared_lock("backup b"):
        assert len(repo.locks.locks()) == 2
        with pytest.raises(Locked, match="backup"), repo.exclusive_lock("gc"):
            pass
    with (
        repo.exclusive_lock("gc"),
        pytest.raises(Locked, match="gc"),
        repo.shared_lock("backup c", wait=0),
    ):
        pass
    assert repo.locks.locks() == []


def test_lock_of_a_dead_process_is_stale(repo: Repository) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = LockInfo(id="deadbeef", kind="exclusive", host=repo.locks.host, pid=dead.pid,
                    start="1", purpose="gc", created=0, refreshed=repo.locks.now())
    repo.backend.put("locks/deadbeef", json.dumps(lock.__dict__).encode())
    with repo.shared_lock("backup", wait=0):
        pass
    assert repo.locks.locks() == []


def test_lock_not_refreshed_expires(repo: Repository) -> None:
    clock = [1_000_000.0]
    mgr = LockManager(repo.backend, now=lambda: clock[0])
    lock = LockInfo(id="cafe", kind="exclusive", host="other-host", pid=1, start="1",
                    purpose="gc elsewhere", created=clock[0], refreshed=clock[0])
    repo.backend.put("locks/cafe", json.dumps(lock.__dict__).encode())
    with pytest.raises(Locked, match="other-host"), mgr.hold("shared", "backup"):
        pass
    clock[0] += STALE_AFTER + 1
    with mgr.hold("shared", "backup"):
        pass


def test_a_clock_jumping_forward_never_makes_a_live_lock_of_this_host_stale(
        repo: Repository) -> None:
    """A backup of this host holds its lock; the clock jumps a day ahead: a gc still
    sees the lock as live (the process decides on this host, not the clock)."""
    clock = [1_000_000.0]
    mgr = LockManager(repo.backend, now=lambda: clock[0])
    with mgr.hold("shared", "backup"):
        clock[0] += 24 * 3600
        with pytest.raises(Locked, match="backup"), mgr.hold("exclusive", "gc"):
            pass
    with mgr.hold("exclusive", "gc"):  # released: free again
        pass
