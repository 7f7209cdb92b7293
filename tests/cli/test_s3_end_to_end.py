"""Every command on a repository in S3 (SeaweedFS), end to end on a real guest.

One guest and one repository (a prefix of one bucket) for the module, two backups
of it (full, then incremental), and the commands that read them in turn: restores
(disk bit-exact, a VM that boots), files, an export, instant recovery, a clone, a deep
verify, a catalog rebuilt from the bucket on a fresh state directory, then prune and
gc, checked against what the bucket holds afterwards. The tests run in file order and
share the points: each reads what the ones before it left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stasis.backends import open_backend
from stasis.catalog.db import CATALOG_FILE
from stasis.repository import Repository
from stasis_testkit import SAMPLE, DiskSpec, Guest, GuestKit, MiB, tree_manifest
from tests.cli.test_restore_group import _console_log, _wait_booted
from tests.conftest import (
    BIN,
    CHEAP_KDF,
    PASSPHRASE,
    ROOT,
    Cli,
    images_equal,
    remove_domain,
    seed_catalog,
)
from tests.s3servers import KINDS, S3Server

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

PATTERN_AT = 3 * MiB


@dataclass
class Site:
    """A repository on S3 and the CLI pointed at it, with a guest backed up twice."""

    server: S3Server
    bucket: str
    prefix: str
    url: str
    cli: Cli
    guest: Guest
    root: Path
    points: list[dict[str, Any]] = field(default_factory=list)
    references: list[Path] = field(default_factory=list)  # vda as raw, at each point

    def objects(self, under: str = "") -> dict[str, int]:
        """Key (below the prefix) → size of every object in the repository."""
        client, found, token = self.server.client(), {}, None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            page = client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}",
                                          **kw)
            for o in page.get("Contents", ()):
                found[o["Key"].removeprefix(f"{self.prefix}/")] = o["Size"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated"):
                return found


def s3_cli_env(url: str, root: Path) -> dict[str, str]:
    """The environment of a CLI run on ``url``, with its state under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASIS_")}
    env.update(STASIS_REPO=url, STASIS_PASSPHRASE=PASSPHRASE,
               STASIS_STATE_DIR=str(root / "state"), STASIS_SCRATCH_DIR=str(root / "scratch"),
               COLUMNS="200",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    (root / "scratch").mkdir(mode=0o711, parents=True, exist_ok=True)
    return env


def _reference(guest: Guest, dest: Path) -> Path:
    guest.sync()
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
                    str(guest.disks["vda"].path), str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def site(kit: GuestKit, seaweedfs: S3Server, catalog_template: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("s3-e2e")
    bucket = seaweedfs.new_bucket()
    url = seaweedfs.url(bucket, "e2e")
    Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(), chunk_size=256 << 10,
                    kdf=CHEAP_KDF)
    env = s3_cli_env(url, root)
    seed_catalog(catalog_template, Path(env["STASIS_STATE_DIR"]) / CATALOG_FILE)
    g = kit.create(disks=[DiskSpec("vda", "qcow2", 64 * MiB),
                          DiskSpec("vdb", "qcow2", 64 * MiB, ext4_from=SAMPLE)])
    try:
        g.wait_ready(90)
        g.write_pattern("vda", PATTERN_AT, 512 * 1024, seed=41)
        site = Site(seaweedfs, bucket, "e2e", url, Cli(root / "unused", env), g, root)
        for n in range(2):
            if n:
                # Over the first pattern: chunks only the first point holds (gc's work)
                g.write_pattern("vda", PATTERN_AT, 512 * 1024, seed=42)
            ref = _reference(g, root / f"vda-{n}.raw")
            point = site.cli.ok("backup", "vm", g.name, "--json").json()
            assert isinstance(point, dict)
            site.points.append(point)
            site.references.append(ref)
        yield site
    finally:
        g.destroy()


def test_full_then_incremental_backup_lands_in_the_bucket(site: Site) -> None:
    full, incr = site.points
    modes = [{d["target"]: d["mode"] for d in p["vms"][0]["disks"]} for p in site.points]
    assert modes == [{"vda": "full", "vdb": "full"},
                     {"vda": "incremental", "vdb": "incremental"}], modes
    vda = next(d for d in incr["vms"][0]["disks"] if d["target"] == "vda")
    assert full["id"][:12] in vda["reason"]
    assert vda["bytes_read"] <= 2 * MiB  # only what changed was read
    objects = site.objects()
    assert {"config", f"manifests/{full['id']}", f"manifests/{incr['id']}"} <= set(objects)
    assert sum(1 for k in objects if k.startswith("chunks/")) > 8
    listed = site.cli.ok("list", "--json").json()
    assert isinstance(listed, list) and [p["id"] for p in listed] == [full["id"], incr["id"]]


def test_restore_disk_is_bit_exact_at_each_point(site: Site, tmp_path: Path) -> None:
    for point, ref in zip(site.points, site.references, strict=True):
        out = tmp_path / f"{point['id']}.raw"
        site.cli.ok("restore", "disk", point["id"], "--disk", "vda", "--to", str(out),
                    "--format", "raw")
        assert images_equal(ref, out)


def test_restore_vm_boots(kit: GuestKit, site: Site, tmp_path: Path) -> None:
    name = f"{site.guest.name}-s3"
    storage = tmp_path / "storage"
    storage.mkdir()
    try:
        r = site.cli.ok("restore", "vm", f"{site.guest.name}@latest", "--storage", str(storage),
                        "--name", name, "--start", "--json").json()
        assert isinstance(r, dict) and r["started"]
        _wait_booted(_console_log(ET.fromstring(kit.conn.lookupByName(name).XMLDesc(0))))
    finally:
        remove_domain(kit.conn, name)


def test_files_are_listed_and_extracted(kit: GuestKit, site: Site, tmp_path: Path) -> None:
    point = site.points[-1]["id"]
    listing = site.cli.ok("files", "ls", point, "/data", "--disk", "vdb", "--json").json()
    assert isinstance(listing, list)
    assert {e["name"] for e in listing} >= {"log.txt", "random-5m.bin", "random-64k.bin"}
    out = tmp_path / "out"
    out.mkdir()
    site.cli.ok("files", "get", point, "/data", "--disk", "vdb", "--to", str(out))
    want = {k: v for k, v in tree_manifest(kit.sample_tree()).items() if k.startswith("data/")}
    assert tree_manifest(out) == want


def test_export_serves_the_disk_of_a_point(site: Site, tmp_path: Path) -> None:
    sock = tmp_path / "vda.sock"
    proc = subprocess.Popen([str(BIN), "export", site.points[0]["id"], "--disk", "vda",
                             "--socket", str(sock), "--json"], env=site.cli.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the JSON object, printed once it serves
            lines.append(line)
            if line.startswith("}"):
                break
        assert lines, proc.stderr.read() if proc.stderr else ""
        uri = json.loads("".join(lines))["uri"]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                              str(site.references[0]), uri], capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_instant_recovery_boots_from_the_bucket(kit: GuestKit, site: Site,
                                                tmp_path: Path) -> None:
    name = f"{site.guest.name}-inst"
    storage = tmp_path / "storage"
    storage.mkdir()
    try:
        site.cli.ok("instant", site.points[-1]["id"], "--name", name, "--storage",
                    str(storage))
        _wait_booted(_console_log(ET.fromstring(kit.conn.lookupByName(name).XMLDesc(0))))
        (row,) = site.cli.ok("instant", "list", "--json").json()  # type: ignore[misc]
        assert row["name"] == name and row["export_alive"]
        site.cli.ok("instant", "discard", name)
        assert site.cli.ok("instant", "list", "--json").json() == []
    finally:
        remove_domain(kit.conn, name)
        subprocess.run([str(BIN), "instant", "discard", name], env=site.cli.env,
                       capture_output=True)


def test_a_full_clone_equals_the_point(kit: GuestKit, site: Site, tmp_path: Path) -> None:
    name = f"{site.guest.name}-fc"
    storage = tmp_path / "clone"
    storage.mkdir()
    try:
        r = site.cli.ok("clone", site.points[-1]["id"], "--name", name, "--storage",
                        str(storage), "--json").json()
        assert isinstance(r, dict) and not r["linked"]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(site.references[-1]), r["disks"]["vda"]],
                             capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        remove_domain(kit.conn, name)


def test_deep_verify_reads_every_chunk(site: Site) -> None:
    report = site.cli.ok("verify", "--deep", "--json").json()
    assert isinstance(report, dict) and report["ok"], report


def test_catalog_rebuilt_from_the_bucket_on_a_fresh_host(site: Site, tmp_path: Path) -> None:
    fresh = {**site.cli.env, "STASIS_STATE_DIR": str(tmp_path / "fresh-state")}
    rebuilt = site.cli.ok("catalog", "rebuild", "--json", env=fresh).json()
    assert isinstance(rebuilt, dict) and rebuilt["points"] == 2
    assert rebuilt["url"] == site.url
    listed = site.cli.ok("list", "--json", env=fresh).json()
    assert isinstance(listed, list)
    assert [p["id"] for p in listed] == [p["id"] for p in site.points]


def test_prune_then_gc_delete_from_the_bucket_what_no_point_needs(site: Site,
                                                                  tmp_path: Path) -> None:
    full, incr = site.points
    pruned = site.cli.ok("prune", "--keep-last", "1", "--json").json()
    assert isinstance(pruned, dict) and pruned["removed"] == [full["id"]]
    before = site.objects()
    assert f"manifests/{full['id']}" not in before
    dry = site.cli.ok("gc", "--dry-run", "--json").json()
    assert isinstance(dry, dict) and dry["chunks"]["count"] > 0
    assert site.objects() == before  # a dry run deletes nothing
    report = site.cli.ok("gc", "--json").json()
    assert isinstance(report, dict)
    after = site.objects()
    gone = set(before) - set(after)
    assert set(after) <= set(before)
    chunks_gone = {k for k in gone if k.startswith("chunks/")}
    assert len(chunks_gone) == report["chunks"]["count"] == dry["chunks"]["count"]
    assert sum(before[k] for k in chunks_gone) == report["chunks"]["bytes"]
    again = site.cli.ok("gc", "--dry-run", "--json").json()
    assert isinstance(again, dict) and again["chunks"]["count"] == 0
    # What is left is whole: the newest point verifies deep and restores exactly.
    assert site.cli.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
    out = tmp_path / "after-gc.raw"
    site.cli.ok("restore", "disk", incr["id"], "--disk", "vda", "--to", str(out),
                "--format", "raw")
    assert images_equal(site.references[-1], out)
    assert list(open_backend(site.url).leftovers()) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rgw", "swift"])
def test_the_guest_backs_up_and_restores_on_rgw_and_swift(
        site: Site, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """One representative run on each other server: backup (full, incremental), a
    bit-exact restore, a deep verify and gc, on a repository of its own."""
    server: S3Server = request.getfixturevalue(kind)
    url = server.url(server.new_bucket(), "e2e")
    Repository.init(open_backend(url), passphrase=PASSPHRASE.encode(), chunk_size=256 << 10,
                    kdf=CHEAP_KDF)
    cli = Cli(tmp_path / "unused", s3_cli_env(url, tmp_path))
    g = site.guest
    for n in range(2):
        if n:
            # over data the full backup stored: a chunk for gc (a new byte per run)
            g.write_pattern("vda", PATTERN_AT, 64 * 1024, byte=0x61 + KINDS.index(kind))
        ref = _reference(g, tmp_path / f"ref{n}.raw")
        point = cli.ok("backup", "vm", g.name, "--json").json()
        assert isinstance(point, dict)
        modes = {d["target"]: d["mode"] for d in point["vms"][0]["disks"]}
        assert modes["vda"] == ("incremental" if n else "full"), modes
        out = tmp_path / f"out{n}.raw"
        cli.ok("restore", "disk", point["id"], "--disk", "vda", "--to", str(out),
               "--format", "raw")
        assert images_equal(ref, out)
    assert cli.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
    cli.ok("prune", "--keep-last", "1")
    report = cli.ok("gc", "--json").json()
    assert isinstance(report, dict) and report["chunks"]["count"] > 0
    assert cli.ok("verify", "--deep", "--json").json()["ok"]  # type: ignore[index]
