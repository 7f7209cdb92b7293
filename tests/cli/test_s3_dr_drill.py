"""Recovery at a second site, from S3: a group of two guests is backed up to a bucket,
then the production site is lost (both VMs undefined, their disks gone), and a host
that has never seen it, holding only the repository's URL and its key file, rebuilds
its catalog from the bucket and brings the application back: ``restore group`` (both
guests boot) and ``instant``."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stasis_testkit import DiskSpec, GuestKit, MiB, read_image
from tests.cli.test_restore_group import _console_log, _wait_booted
from tests.cli.test_s3_end_to_end import s3_cli_env
from tests.conftest import BIN, Cli, remove_domain
from tests.s3servers import S3Server

pytestmark = pytest.mark.vm
libvirt = pytest.importorskip("libvirt")

PATTERN_AT = 1 * MiB
PATTERN_LEN = 64 * 1024


def _booted(conn: object, name: str) -> ET.Element:
    xml = ET.fromstring(conn.lookupByName(name).XMLDesc(0))  # type: ignore[attr-defined]
    _wait_booted(_console_log(xml))
    return xml


def test_a_fresh_host_with_the_url_and_key_file_brings_the_group_back(
        kit: GuestKit, seaweedfs: S3Server, tmp_path: Path) -> None:
    url = seaweedfs.url(seaweedfs.new_bucket(), "site-a")
    key = tmp_path / "dr.key"
    prod = s3_cli_env(url, tmp_path / "prod")
    del prod["STASIS_PASSPHRASE"]
    production = Cli(tmp_path / "unused", prod)
    production.ok("repo", "init", "--key-file", str(key), "--chunk-size", "256K")
    guests = [kit.create(disks=[DiskSpec("vda", "qcow2", 32 * MiB)]) for _ in range(2)]
    names = [g.name for g in guests]
    restored: list[str] = []
    dr_env: dict[str, str] = {}
    try:
        patterns = {}
        for n, g in enumerate(guests):
            g.wait_ready(90)
            patterns[g.name] = g.write_pattern("vda", PATTERN_AT, PATTERN_LEN, seed=800 + n)
        point = production.ok("backup", "group", "app", *(a for n in names for a in ("--vm", n)),
                              "--key-file", str(key), "--json").json()
        assert isinstance(point, dict) and sorted(v["name"] for v in point["vms"]) == sorted(names)
        # The production site is lost: its VMs, their disks, its catalog.
        for g in guests:
            disk = g.disks["vda"].path
            g.destroy()
            assert not disk.exists()
        assert not {d.name() for d in kit.conn.listAllDomains(0)} & set(names)

        # The second site: a new state directory, the URL and the key file, nothing else.
        dr_env.update(s3_cli_env(url, tmp_path / "dr"))
        del dr_env["STASIS_PASSPHRASE"]
        assert not (tmp_path / "dr" / "state").exists()
        dr = Cli(tmp_path / "unused", dr_env)
        k = ("--key-file", str(key))
        rebuilt = dr.ok("catalog", "rebuild", *k, "--json").json()
        assert isinstance(rebuilt, dict) and rebuilt["points"] == 1
        (listed,) = dr.ok("list", *k, "--json").json()  # type: ignore[misc]
        assert listed["id"] == point["id"]

        storage = tmp_path / "dr-storage"
        storage.mkdir()
        result = dr.ok("restore", "group", "app@latest", "--suffix", "-dr", "--storage",
                       str(storage), "--start", *k, "--json").json()
        assert isinstance(result, dict)
        restored += [v["name"] for v in result["vms"]]
        assert sorted(restored) == sorted(f"{n}-dr" for n in names)
        for v in result["vms"]:
            _booted(kit.conn, v["name"])
            (disk,) = v["disks"]
            assert read_image(Path(disk["target"]), "qcow2", PATTERN_AT, PATTERN_LEN) == \
                patterns[v["vm"]]

        # A single VM of the point restored as new is test_s3_end_to_end's
        # test_restore_vm_boots; here the group's restore stands for it.
        inst = f"{names[1]}-inst"
        restored.append(inst)
        dr.ok("instant", point["id"], "--vm", names[1], "--name", inst, "--storage",
              str(storage), *k)
        _booted(kit.conn, inst)
        dr.ok("instant", "discard", inst)
    finally:
        for name in restored:
            remove_domain(kit.conn, name)
            if name.endswith("-inst"):  # its export, if the test failed before discard
                subprocess.run([str(BIN), "instant", "discard", name], env=dr_env,
                               capture_output=True)
        for g in guests:
            g.destroy()
