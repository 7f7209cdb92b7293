"""The sequential-log checker, on images built in Python (no VM)."""

from __future__ import annotations

import pytest

from stasis_testkit import SeqLog, SeqLogMismatch, SeqLogTarget, check_seqlog, seq_block
from stasis_testkit.workload import BLOCK

LOG = SeqLog.on("vda", "vdb", blocks=8, offset=1 << 20)


def state(log: SeqLog, n: int) -> dict[str, bytearray]:
    """The target regions after the first ``n`` writes, written the way the guest does."""
    regions = {t.disk: bytearray(t.size) for t in log.targets}
    for seq in range(n):
        ti, b = log.locate(seq)
        disk = log.targets[ti].disk
        regions[disk][b * BLOCK:(b + 1) * BLOCK] = seq_block(seq, disk, b)
    return regions


def frozen(regions: dict[str, bytearray]) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in regions.items()}


def test_block_format() -> None:
    block = seq_block(42, "vdb", 7)
    assert len(block) == BLOCK
    lines = block.split(b"\n")[:-1]
    assert len(lines) == 64 and all(len(line) == 63 for line in lines)
    assert lines[0] == b"STASIS-SEQ 000000000042 vdb      00000007 L00" + b"." * 18
    assert lines[63].startswith(b"STASIS-SEQ 000000000042 vdb      00000007 L63")


def test_locate_alternates_disks_and_wraps() -> None:
    assert [LOG.locate(s) for s in range(5)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    assert LOG.locate(16) == (0, 0)  # 2 targets x 8 blocks: write 16 wraps to block 0
    assert LOG.expected_seq(16, 0, 0) == 0
    assert LOG.expected_seq(17, 0, 0) == 16
    assert LOG.expected_seq(3, 1, 1) is None


@pytest.mark.parametrize("n", [0, 1, 2, 7, 15, 16, 17, 31, 32, 33, 100])
def test_every_prefix_state_is_recognized(n: int) -> None:
    assert check_seqlog(LOG, frozen(state(LOG, n))) == n


def test_single_target_and_expected_region_agree() -> None:
    log = SeqLog((SeqLogTarget("vdc", 0, 5),))
    for n in range(0, 23):
        regions = frozen(state(log, n))
        assert regions["vdc"] == log.expected_region(n, 0)
        assert check_seqlog(log, regions) == n


def test_missing_write_is_reported() -> None:
    regions = state(LOG, 12)
    b = 3  # write 6 went to vda block 3; put back what it overwrote: zeros
    regions["vda"][b * BLOCK:(b + 1) * BLOCK] = bytes(BLOCK)
    with pytest.raises(SeqLogMismatch, match=r"vda block 3: holds zeros .*expected seq 6"):
        check_seqlog(LOG, frozen(regions))


def test_stale_block_after_wraparound_is_reported() -> None:
    regions = state(LOG, 20)
    # Write 16 overwrote vda block 0 (seq 0); a backup holding seq 0 there with seq 19 on
    # vdb is no state the guest passed through.
    regions["vda"][0:BLOCK] = seq_block(0, "vda", 0)
    with pytest.raises(SeqLogMismatch, match=r"vda block 0: holds seq 0, expected seq 16"):
        check_seqlog(LOG, frozen(regions))


def test_disks_from_different_instants_are_reported() -> None:
    early, late = state(LOG, 6), state(LOG, 14)
    with pytest.raises(SeqLogMismatch, match=r"state after 14 writes"):
        check_seqlog(LOG, {"vda": bytes(early["vda"]), "vdb": bytes(late["vdb"])})


def test_torn_block_is_reported() -> None:
    regions = state(LOG, 20)
    # Half of vdb block 1 from write 3, half from write 19: a torn write.
    regions["vdb"][BLOCK + 2048:2 * BLOCK] = seq_block(3, "vdb", 1)[2048:]
    with pytest.raises(SeqLogMismatch, match=r"vdb block 1: holds seq 19 \(torn"):
        check_seqlog(LOG, frozen(regions))


def test_misplaced_and_foreign_blocks_are_reported() -> None:
    regions = state(LOG, 10)
    regions["vda"][2 * BLOCK:3 * BLOCK] = seq_block(4, "vda", 4)  # seq 4 belongs at block 2
    with pytest.raises(SeqLogMismatch, match=r"written for vda block 4"):
        check_seqlog(LOG, frozen(regions))
    regions = state(LOG, 10)
    regions["vdb"][5 * BLOCK:5 * BLOCK + 5] = b"hello"
    with pytest.raises(SeqLogMismatch, match=r"vdb block 5: .*foreign or torn"):
        check_seqlog(LOG, frozen(regions))


def test_wrong_region_size_or_missing_disk() -> None:
    regions = frozen(state(LOG, 3))
    with pytest.raises(SeqLogMismatch, match="no data given for disk vdb"):
        check_seqlog(LOG, {"vda": regions["vda"]})
    with pytest.raises(SeqLogMismatch, match="got 4096 bytes"):
        check_seqlog(LOG, {"vda": regions["vda"], "vdb": regions["vdb"][:BLOCK]})


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SeqLogTarget("vdb", offset=100)
    with pytest.raises(ValueError):
        SeqLogTarget("/dev/vdb")
    with pytest.raises(ValueError):
        SeqLog.on("vdb", "vdb")
