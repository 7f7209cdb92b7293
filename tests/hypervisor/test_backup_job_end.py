"""Ending libvirt backup jobs when libvirt's event thread is held up (issue 11).

libvirt 9.0 handles a domain's QEMU events on one thread. A guest that closes and opens
a virtio-serial port while a backup job runs (its guest agent restarting, or starting
late in the boot) parks that thread for 30 s, and the backup job's own end waits behind
it: after ``abortJob`` the job stays, and the next ``backupBegin`` fails. These tests
make a real guest do exactly that and check that Stasis still ends its job at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.hypervisor import agent
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import parse
from stasis.protection.doctor import clean_vm
from stasis.repository import Repository
from stasis_testkit import DiskSpec, Guest, GuestKit, MiB

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")


@pytest.fixture
def agent_guest(kit: GuestKit) -> Iterator[Guest]:
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB)], guest_agent=True,
                   machine="q35", memory_mib=160)
    try:
        g.wait_ready(90)
        # ./scripts/setup installs qemu-guest-agent, which the kit puts in the guest.
        assert g.has_agent, "the guest runs no qemu-ga: run ./scripts/setup"
        # QEMU sends at most one VSERPORT_CHANGE a second per port and holds back (and
        # merges) what comes sooner: past that second the port's next change, the
        # test's, reaches libvirt at once.
        time.sleep(1.2)
        yield g
    finally:
        g.destroy()


def _job(g: Guest, run_dir: Path, **kw: float) -> lv.PullBackup:
    info = parse(lv.domain_xml(g.domain))
    return lv.PullBackup(g.domain, [lv.JobDisk(d) for d in info.disks], checkpoint=None,
                         checkpoint_disks=[], run_dir=run_dir, dac=info.dac, **kw)


def _wait_agent(dom: object, timeout: float = 30) -> str:
    """"" once the guest agent answers through libvirt, else why it does not."""
    deadline = time.monotonic() + timeout
    why = agent.probe(dom)
    while why and time.monotonic() < deadline:
        time.sleep(0.2)
        why = agent.probe(dom)
    return why


def _stuck_after_plain_abort(dom: object) -> bool:
    """Whether libvirt still shows the backup job 1.5 s after a plain abortJob."""
    dom.abortJob()  # type: ignore[attr-defined]
    time.sleep(1.5)
    return lv.backup_job_socket(dom) is not None  # type: ignore[arg-type]


def test_job_ends_at_once_when_the_guest_agent_restarts_during_it(
        agent_guest: Guest, tmp_path: Path) -> None:
    dom = agent_guest.domain
    with _job(agent_guest, tmp_path) as job:
        agent_guest.restart_agent()  # the agent port closes and opens while the job runs
        stuck = _stuck_after_plain_abort(dom)
        if libvirt.getVersion() // 1000 == 9000:  # Debian 12's libvirt 9.0: the defect is there
            assert stuck, "the scenario did not reproduce libvirt 9.0's parked event thread"
        started = time.monotonic()
    ended_in = time.monotonic() - started
    assert job.not_ended is None
    assert lv.backup_job_socket(dom) is None, "the backup job outlived the with block"
    assert not list(tmp_path.iterdir()), "scratch or socket directories were left"
    # The next job begins at once, and libvirt saw the agent's port open again (the
    # event that was held up ran as soon as the job ended): the agent answers.
    with _job(agent_guest, tmp_path):
        pass
    assert lv.backup_job_socket(dom) is None
    assert _wait_agent(dom) == ""
    assert ended_in < lv.END_JOB_TIMEOUT_S  # not ended by outwaiting libvirt


def test_a_job_that_outlives_its_end_is_reported_and_doctor_ends_it(
        agent_guest: Guest, tmp_path: Path, repo: Repository) -> None:
    dom = agent_guest.domain
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with _job(agent_guest, run_dir, end_timeout=0.0) as job:
        agent_guest.restart_agent()
        stuck = _stuck_after_plain_abort(dom)
    if libvirt.getVersion() // 1000 == 9000:  # Debian 12's libvirt 9.0: the defect is there
        assert stuck, "the scenario did not reproduce libvirt 9.0's parked event thread"
    elif not stuck:
        pytest.skip("this libvirt ends the job without help: nothing outlives its end")
    assert job.not_ended is not None  # said, not claimed as success
    assert agent_guest.name in str(job.not_ended) and "doctor --fix" in str(job.not_ended)
    assert lv.backup_job_socket(dom) is not None
    # This process still runs, but the job's directory is gone: it is debris, and the
    # next backup's cleanup (what doctor --fix runs) ends it at once.
    report = clean_vm(dom, repo)
    assert [(f.kind, f.fixed) for f in report.findings] == [("libvirt job", True)]
    assert lv.backup_job_socket(dom) is None
    with _job(agent_guest, run_dir):
        pass
    assert _wait_agent(dom) == ""
