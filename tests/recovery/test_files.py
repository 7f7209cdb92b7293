"""Files from a point: real disks (GPT/MBR, LVM, ext4, XFS, FAT, NTFS) built by the test kit,
backed up, then listed, found and extracted straight from the repository."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stasis.backends import open_backend
from stasis.errors import (
    AmbiguousVolume,
    FileNotInPoint,
    FilesystemUnknown,
    FileTargetExists,
    TargetError,
)
from stasis.protection.backup import back_up_images
from stasis.recovery.diskread import DiskReader
from stasis.recovery.files import DiskFiles, Entry, Volume, extract, read_file
from stasis.repository import Credentials, Manifest, Repository
from stasis_testkit import fsimages, sample_tree
from stasis_testkit.disks import GiB, MiB
from tests.conftest import CHEAP_KDF, PASSPHRASE, Cli, mixed_image

ROOT = os.geteuid() == 0


# -------------------------------------------------------------------- helpers


def backup(repo: Repository, image: Path, name: str | None = None) -> Manifest:
    return back_up_images(repo, [image], name=name or image.stem)


def reopen(repo: Repository) -> Repository:
    return Repository.open(open_backend(repo.url), Credentials(passphrase=PASSPHRASE.encode()))


def source_state(root: Path, *, dirs: bool = True) -> dict[str, tuple[object, ...]]:
    """rel path → (type, mode, mtime_ns, size, link) of a real directory tree."""
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = "/" + path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("symlink", stat.S_IMODE(st.st_mode), st.st_mtime_ns, 0,
                          os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            if dirs:
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, 0, None)
        elif stat.S_ISREG(st.st_mode):
            found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, None)
    return found


def seconds(state: tuple[object, ...]) -> tuple[object, ...]:
    """A source_state row with its mtime cut to whole seconds."""
    mtime = state[2]
    assert isinstance(mtime, int)
    return (*state[:2], mtime - mtime % 1_000_000_000, *state[3:])


def listing_state(entries: Iterator[Entry], prefix: str = "", *,
                  dirs: bool = True) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for e in entries:
        rel = e.path[len(prefix):]
        if rel == "/lost+found" or rel.startswith("/lost+found/") or (e.type == "dir"
                                                                      and not dirs):
            continue
        found[rel] = (e.type, e.mode, e.mtime_ns, e.size, e.link)
    return found


def digests(root: Path) -> dict[str, str]:
    return {"/" + p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def assert_extracted_equal(source: Path, out: Path) -> None:
    """Content, mode (without set-ID bits) and mtime of every file, dir and symlink."""
    want = source_state(source)
    got = source_state(out)
    assert set(got) == set(want)
    for rel, (kind, mode, mtime, size, link) in want.items():
        g_kind, g_mode, g_mtime, g_size, g_link = got[rel]
        assert (g_kind, g_size, g_link) == (kind, size, link), rel
        assert g_mtime == mtime, rel
        if kind != "symlink":
            assert g_mode == mode & 0o1777, rel
    assert digests(out) == digests(source)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("tree") / "sample")


@pytest.fixture(scope="module")
def fat_tree(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample tree with its symlinks copied as files, but link-to-log (FAT has none)."""
    dest = tmp_path_factory.mktemp("fat-tree") / "sample"
    shutil.copytree(tree, dest, symlinks=False)
    (dest / "link-to-log").unlink()
    # mtools stores this name as a short name in its code page (850), which a reader
    # cannot tell from the Linux default (437): not a test of Stasis.
    (dest / "\u00fcn\u00efc\u00f6de.txt").unlink()
    os.utime(dest, (1_700_000_000, 1_700_000_000))
    return dest


# -------------------------------------------------------------------- the reader


def test_reader_serves_zero_chunks_without_loads_and_caches(repo: Repository,
                                                            tmp_path: Path) -> None:
    image = mixed_image(tmp_path / "mixed.img")
    m = backup(repo, image)
    vm, disk = m.disks()[0]
    raw = image.read_bytes()
    cs = repo.chunk_size
    r = DiskReader.open(repo, m, vm, disk, cache_bytes=2 * cs)
    assert r.read_at(9 * MiB, 4096) == bytes(4096)  # explicit zeros: never stored
    assert r.loads == 0 and r.zero_reads == 1
    # across a chunk boundary, from two stored chunks
    assert r.read_at(cs - 100, 200) == raw[cs - 100:cs + 100]
    assert r.loads == 2
    assert r.read_at(cs - 50, 100) == raw[cs - 50:cs + 50]
    assert r.loads == 2  # both cached
    assert r.read_at(3 * MiB + 4096, 10) == raw[3 * MiB + 4096:3 * MiB + 4106]
    assert r.loads == 3  # the cache holds two chunks: chunk 0 was evicted
    assert r.read_at(0, 10) == raw[:10]
    assert r.loads == 4
    # the last, short chunk and the end of the disk
    assert r.read_at(len(raw) - 70000, 1 << 20) == raw[-70000:]
    assert r.read_at(len(raw), 10) == b""
    # file-like: seek, tell, read
    r.seek(13 * MiB + 512)
    assert r.read(3000) == raw[13 * MiB + 512:13 * MiB + 3512]
    assert r.tell() == 13 * MiB + 3512
    assert r.seek(-10, os.SEEK_END) == len(raw) - 10
    assert r.read() == raw[-10:]


# ------------------------------------------------------------------- ext4


def test_ext4_listing_and_extraction_match_the_source(repo: Repository, tree: Path,
                                                      tmp_path: Path) -> None:
    disk = fsimages.ext4_disk(tmp_path / "ext4.img", tree, size=256 * MiB)
    m = backup(repo, disk.path)
    files = DiskFiles.open(reopen(repo), m)
    assert files.single and files.volumes[0].fs is not None
    assert files.volumes[0].fs.type == "ext4"
    assert listing_state(files.walk("/")) == source_state(tree)
    top = files.ls("/")
    names = {e.name for e in top if isinstance(e, Entry)}
    assert names == {p.name for p in tree.iterdir()} | {"lost+found"}
    link = next(e for e in top if isinstance(e, Entry) and e.name == "link-to-log")
    assert (link.type, link.link) == ("symlink", "data/log.txt")

    out = tmp_path / "out"
    out.mkdir()
    result = extract(files, ["/"], out)
    shutil.rmtree(out / "lost+found")
    os.utime(out, ns=(os.lstat(tree).st_mtime_ns,) * 2)
    assert_extracted_equal(tree, out)
    assert result.symlinks == sum(p.is_symlink() for p in tree.rglob("*"))
    assert result.files == len(digests(tree)) and not result.skipped
    assert (out / "link-to-log").is_symlink()


def test_directory_extraction_is_recursive_under_its_own_name(repo: Repository, tree: Path,
                                                              tmp_path: Path) -> None:
    disk = fsimages.ext4_disk(tmp_path / "ext4.img", tree, size=64 * MiB)
    files = DiskFiles.open(repo, backup(repo, disk.path))
    out = tmp_path / "out"
    out.mkdir()
    result = extract(files, ["/deep", "/data/log.txt", "link-to-log"], out)
    assert sorted(p.name for p in out.iterdir()) == ["deep", "link-to-log", "log.txt"]
    assert (out / "deep/a/b/c/d/leaf.txt").read_bytes() == b"the bottom of the tree\n"
    assert (out / "log.txt").read_bytes() == (tree / "data/log.txt").read_bytes()
    assert os.readlink(out / "link-to-log") == "data/log.txt"
    assert result.dirs == 5 and result.files == 2 and result.symlinks == 1
    for d in ("deep", "deep/a/b/c/d"):
        assert os.stat(out / d).st_mtime_ns == os.stat(tree / d).st_mtime_ns


def test_small_file_from_a_multi_gib_disk_reads_a_few_chunks(repo: Repository, tree: Path,
                                                             tmp_path: Path) -> None:
    disk = fsimages.ext4_disk(tmp_path / "big.img", tree, size=8 * GiB)
    m = backup(repo, disk.path)
    chunks_on_disk = len(list(repo.load_disk_index(m, *m.disks()[0]).stored()))
    files = DiskFiles.open(reopen(repo), m)
    assert read_file(files, "/deep/a/b/c/d/leaf.txt") == b"the bottom of the tree\n"
    # superblock and group descriptors, inode table blocks, 6 directories, the data
    assert files.reader.loads <= 8, files.reader.loads
    assert chunks_on_disk > 40  # the disk's metadata alone is far more than that
    before = files.reader.loads
    assert read_file(files, "/README").startswith(b"Stasis test-kit sample tree")
    assert files.reader.loads - before <= 2


def test_existing_files_are_kept_unless_forced(repo: Repository, tree: Path,
                                               tmp_path: Path) -> None:
    disk = fsimages.ext4_disk(tmp_path / "ext4.img", tree, size=64 * MiB)
    files = DiskFiles.open(repo, backup(repo, disk.path))
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "log.txt").write_bytes(b"mine")
    with pytest.raises(FileTargetExists) as e:
        extract(files, ["/data", "/README"], out)
    assert str(out / "data" / "log.txt") in str(e.value) and e.value.exit_code == 17
    assert (out / "data" / "log.txt").read_bytes() == b"mine"
    assert not (out / "README").exists()  # nothing at all was written
    assert not (out / "data" / "random-64k.bin").exists()
    extract(files, ["/data", "/README"], out, force=True)
    assert (out / "data" / "log.txt").read_bytes() == (tree / "data/log.txt").read_bytes()
    assert not [p for p in out.rglob("*stasis-tmp*")]


def test_errors_name_the_problem(repo: Repository, tree: Path, tmp_path: Path) -> None:
    disk = fsimages.ext4_disk(tmp_path / "ext4.img", tree, size=64 * MiB)
    files = DiskFiles.open(repo, backup(repo, disk.path))
    with pytest.raises(FileNotInPoint) as e:
        files.ls("/data/nope")
    assert "no entry 'nope'" in str(e.value) and e.value.exit_code == 33
    with pytest.raises(FileNotInPoint):
        files.ls("/README/x")
    with pytest.raises(FileNotInPoint):
        files.lookup("/data/../../etc")
    with pytest.raises(TargetError):
        extract(files, ["/README"], tmp_path / "missing-dir")
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(8 * MiB)
        f.write(os.urandom(4096))
    with pytest.raises(FilesystemUnknown) as e2:
        DiskFiles.open(repo, backup(repo, blank)).ls("/")
    assert e2.value.exit_code == 34


# --------------------------------------------------------------- path traversal


def _patch_name(image: Path, old: bytes, new: bytes) -> None:
    """Rename a directory entry in place, bytes for bytes (a hostile file system)."""
    assert len(old) == len(new)
    data = bytearray(image.read_bytes())
    at = data.find(old)
    assert at > 0, old
    data[at:at + len(old)] = new
    image.write_bytes(bytes(data))


def test_hostile_names_and_symlinks_cannot_escape_the_target(repo: Repository,
                                                             tmp_path: Path) -> None:
    src = tmp_path / "hostile"
    (src / "x").mkdir(parents=True)
    (src / "y" / "a").mkdir(parents=True)
    (src / "x" / "a").symlink_to(tmp_path / "outside")  # absolute, out of the target
    (src / "y" / "a" / "pwned").write_text("no\n")
    (src / "QQQQQQQQQQQ").write_text("dotdot\n")  # becomes ../../pwned
    (src / "RR").mkdir()  # becomes ..
    (src / "RR" / "deeper").write_text("x\n")
    (src / "ok.txt").write_text("fine\n")
    (tmp_path / "outside").mkdir()
    image = tmp_path / "hostile.img"
    fsimages.ext4_disk(image, src, size=16 * MiB)
    _patch_name(image, b"QQQQQQQQQQQ", b"../../pwned")
    _patch_name(image, b"\x02\x02RR", b"\x02\x02..")  # name_len 2, a directory
    files = DiskFiles.open(repo, backup(repo, image))
    out = tmp_path / "t" / "out"
    out.mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    result = extract(files, ["/"], out)
    reasons = {s["path"]: s["reason"] for s in result.skipped}
    assert any("pwned" in p for p in reasons), reasons
    # the directory renamed ".." is never entered: its file is nowhere but in the source
    assert [p for p in tmp_path.rglob("deeper")] == [src / "RR" / "deeper"]
    assert (out / "ok.txt").read_text() == "fine\n"
    assert os.readlink(out / "x" / "a") == str(tmp_path / "outside")  # kept, not followed
    assert (out / "y" / "a" / "pwned").read_text() == "no\n"
    assert not (tmp_path / "outside" / "pwned").exists()
    assert not (tmp_path / "t" / "pwned").exists() and not (tmp_path / "pwned").exists()

    # The symlink x/a, then a directory of the same name y/a: never written through.
    out2 = tmp_path / "t" / "out2"
    out2.mkdir()
    with pytest.raises(TargetError):
        extract(files, ["/x/a", "/y/a"], out2)
    assert list((tmp_path / "outside").iterdir()) == []
    extract(files, ["/x/a", "/y/a"], out2, force=True)  # the link is replaced, in place
    assert (out2 / "a").is_dir() and not (out2 / "a").is_symlink()
    assert list((tmp_path / "outside").iterdir()) == []
    after = sorted(p.name for p in tmp_path.rglob("*") if "out" not in p.parts[-2:])
    assert set(after) - set(before) <= {p.name for p in out.rglob("*")} | \
        {p.name for p in out2.rglob("*")} | {"out2"}


# ------------------------------------------------------------------- FAT


def test_fat_partition_files_match_the_source(repo: Repository, fat_tree: Path,
                                              tmp_path: Path) -> None:
    disk = fsimages.fat_disk(tmp_path / "fat.img", fat_tree)
    files = DiskFiles.open(repo, backup(repo, disk.path))
    assert files.single  # one partition: plain paths
    vol = files.filesystems[0]
    assert vol.name == "p1" and vol.fs is not None and vol.fs.type == "fat32"
    want = {k: (v[0], v[2], v[3]) for k, v in source_state(fat_tree, dirs=False).items()}
    got = {k: (v[0], v[2], v[3]) for k, v in
           listing_state(files.walk("/"), dirs=False).items()}
    assert got == want
    assert {e.name for e in files.ls("/") if isinstance(e, Entry)} == \
        {p.name for p in fat_tree.iterdir()}
    assert read_file(files, "p1:/README") == (fat_tree / "README").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    extract(files, ["/data", "/name with spaces.txt", "/deep"], out)
    for rel in ("data/log.txt", "data/random-5m.bin", "name with spaces.txt",
                "deep/a/b/c/d/leaf.txt"):
        src = fat_tree / rel
        assert (out / rel).read_bytes() == src.read_bytes()
        assert os.stat(out / rel).st_mtime_ns == os.stat(src).st_mtime_ns


# ------------------------------------------------------------------- XFS


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="the XFS test disk is filled through a loop mount")
def test_xfs_listing_and_extraction_match_the_source(repo: Repository, tree: Path,
                                                     tmp_path: Path) -> None:
    disk = fsimages.xfs_disk(tmp_path / "xfs.img", tree)
    files = DiskFiles.open(repo, backup(repo, disk.path))
    assert files.single and files.volumes[0].fs is not None
    assert files.volumes[0].fs.type == "xfs"
    assert listing_state(files.walk("/")) == source_state(tree)
    out = tmp_path / "out"
    out.mkdir()
    extract(files, ["/"], out)
    os.utime(out, ns=(os.lstat(tree).st_mtime_ns,) * 2)
    assert_extracted_equal(tree, out)


# ------------------------------------------------------------------- LVM


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="pvcreate needs a loop device")
def test_lvm_volumes_are_named_vg_slash_lv(repo: Repository, tree: Path, fat_tree: Path,
                                           tmp_path: Path) -> None:
    disk = fsimages.lvm_disk(tmp_path / "lvm.img",
                             {"root": (128 * MiB, tree), "data": (64 * MiB, fat_tree)})
    vg = disk.extra["vg"]
    assert vg not in os.listdir("/dev/mapper")  # nothing left behind on the host
    files = DiskFiles.open(repo, backup(repo, disk.path))
    assert not files.single
    top = files.ls("/")
    assert sorted(v.name for v in top if isinstance(v, Volume)) == [f"{vg}/data", f"{vg}/root"]
    assert all(isinstance(v, Volume) and v.fs and v.fs.type == "ext4" for v in top)
    root = f"{vg}/root:"
    assert listing_state(files.walk(root + "/"), root) == source_state(tree)
    assert listing_state(files.walk(f"{vg}/data:/"), f"{vg}/data:") == source_state(fat_tree)
    assert read_file(files, f"{root}/README") == (tree / "README").read_bytes()
    with pytest.raises(AmbiguousVolume) as e:
        files.ls("/README")
    assert e.value.exit_code == 35 and f"{vg}/root" in str(e.value)
    with pytest.raises(FileNotInPoint):
        files.ls("novg/none:/")
    found = [x.path for x in files.find("leaf.txt")]
    assert sorted(found) == [f"{vg}/data:/deep/a/b/c/d/leaf.txt",
                             f"{vg}/root:/deep/a/b/c/d/leaf.txt"]
    out = tmp_path / "out"
    out.mkdir()
    extract(files, [f"{root}/"], out)
    shutil.rmtree(out / "lost+found")
    os.utime(out, ns=(os.lstat(tree).st_mtime_ns,) * 2)
    assert_extracted_equal(tree, out)


# ------------------------------------------------------- Debian root disk (GPT)


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory, fat_tree: Path) -> \
        tuple[Repository, Manifest, fsimages.TestDisk]:
    cached = fsimages.cache_dir() / f"debootstrap-{fsimages.DEBIAN_SUITE}-minbase"
    if not ROOT and not cached.is_dir():
        pytest.skip("debootstrap needs root to build the Debian tree")
    work = tmp_path_factory.mktemp("debian")
    disk = fsimages.debian_root_disk(work / "debian.img", size=4 * GiB, esp_tree=fat_tree)
    repo = Repository.init(open_backend(work / "repo"), passphrase=PASSPHRASE.encode(),
                           chunk_size=1 << 20,
                           kdf=CHEAP_KDF)
    return repo, backup(repo, disk.path, "debian"), disk


@pytest.mark.slow
def test_debian_root_disk_lists_volumes_and_matches_the_tree(
    debian: tuple[Repository, Manifest, fsimages.TestDisk], tmp_path: Path,
) -> None:
    repo, m, disk = debian
    files = DiskFiles.open(repo, m)
    top = files.ls("/")
    assert [(v.name, v.fs.type if v.fs else None) for v in top if isinstance(v, Volume)] == \
        [("p1", "fat16"), ("p2", "ext4")]
    root = disk.volumes["p2"]
    # mkfs.ext4 -d (e2fsprogs 1.47.0) keeps whole seconds of the tree's times
    assert listing_state(files.walk("p2:/etc"), "p2:") == \
        {k: seconds(v) for k, v in source_state(root).items() if k.startswith("/etc/")}
    assert read_file(files, "p2:/etc/debian_version") == \
        (root / "etc/debian_version").read_bytes()
    with pytest.raises(AmbiguousVolume):
        files.ls("/etc")
    out = tmp_path / "out"
    out.mkdir()
    extract(files, ["p2:/etc/apt", "p2:/etc/os-release", "p2:/usr/bin/dpkg"], out)
    assert os.readlink(out / "os-release") == os.readlink(root / "etc/os-release")
    apt = out / "apt"
    assert digests(apt) == digests(root / "etc/apt")
    assert source_state(apt) == {k: seconds(v) for k, v in source_state(root / "etc/apt").items()}
    st = os.stat(out / "dpkg")
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert st.st_mtime_ns == seconds(source_state(root / "usr/bin")["/dpkg"])[2]


@pytest.mark.slow
def test_debian_small_file_reads_a_few_chunks(
    debian: tuple[Repository, Manifest, fsimages.TestDisk],
) -> None:
    repo, m, disk = debian
    files = DiskFiles.open(reopen(repo), m)
    data = read_file(files, "p2:/etc/hostname")
    assert data == (disk.volumes["p2"] / "etc/hostname").read_bytes()
    stored = len(list(repo.load_disk_index(m, *m.disks()[0]).stored()))
    # GPT and both file systems' first blocks, /, /etc, the inode and the data
    assert files.reader.loads <= 8, files.reader.loads
    assert stored > 100


# ------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_ls_get_find_and_exit_codes(cli_repo: Cli, tree: Path, fat_tree: Path,
                                        tmp_path: Path) -> None:
    cli = cli_repo
    gpt = tmp_path / "two.img"
    fsimages.debian_root_disk(gpt, size=1 * GiB, tree=tree, esp_tree=fat_tree)
    cli.ok("backup", "image", str(gpt), "--name", "two")
    top = cli.ok("files", "ls", "two@latest", "--json").json()
    assert [(v["name"], v["type"], v["filesystem"]) for v in top] == \
        [("p1", "volume", "fat16"), ("p2", "volume", "ext4")]
    listing = cli.ok("files", "ls", "two@latest", "p2:/data", "--json").json()
    assert [e["name"] for e in listing] == ["log.txt", "random-5m.bin", "random-64k.bin"]
    log = listing[0]
    assert (log["type"], log["size"], log["mode"], log["path"]) == \
        ("file", (tree / "data/log.txt").stat().st_size, "0644", "p2:/data/log.txt")
    assert log["mtime_ns"] == (tree / "data/log.txt").stat().st_mtime_ns
    link = [e for e in cli.ok("files", "ls", "two@latest", "p2:/", "--json").json()
            if e["name"] == "link-to-log"]
    assert link[0]["type"] == "symlink" and link[0]["link"] == "data/log.txt"
    text = cli.ok("files", "ls", "two@latest", "p2:/").out
    assert "link-to-log -> data/log.txt" in text and "deep/" in text

    out = tmp_path / "out"
    out.mkdir()
    got = cli.ok("files", "get", "two@latest", "p2:/data/log.txt", "p2:/deep", "p2:/link-to-log",
                 "--to", str(out), "--json").json()
    assert (got["files"], got["symlinks"]) == (2, 1)
    assert (out / "log.txt").read_bytes() == (tree / "data/log.txt").read_bytes()
    assert os.readlink(out / "link-to-log") == "data/log.txt"
    again = cli("files", "get", "two@latest", "p2:/data/log.txt", "--to", str(out))
    assert again.code == 17 and "--force" in again.err
    cli.ok("files", "get", "two@latest", "p2:/data/log.txt", "--to", str(out), "--force")

    found = cli.ok("files", "find", "two@latest", "*.txt", "--json").json()
    paths = sorted(f["path"] for f in found)
    assert "p2:/deep/a/b/c/d/leaf.txt" in paths and "p1:/deep/a/b/c/d/leaf.txt" in paths
    assert cli.ok("files", "find", "two@latest", "p2:/deep/*/b").out.split() == []
    assert cli.ok("files", "find", "two@latest", "/deep/*/b").out.split() == \
        ["p1:/deep/a/b/", "p2:/deep/a/b/"]

    assert cli("files", "ls", "two@latest", "p2:/nope").code == 33
    assert cli("files", "ls", "two@latest", "/data").code == 35
    assert cli("files", "ls", "two@latest", "p9:/").code == 33
    assert cli("files", "get", "two@latest", "p2:/nope", "--to", str(out)).code == 33
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(4 * MiB)
    cli.ok("backup", "image", str(blank), "--name", "blank")
    r = cli("files", "ls", "blank@latest")
    assert r.code == 34 and "no partition table" in r.err


# ------------------------------------------------------------------- NTFS


@pytest.mark.skipif(shutil.which("mkntfs") is None or shutil.which("ntfscp") is None,
                    reason="mkntfs and ntfscp (Debian ntfs-3g, installed by scripts/setup) "
                           "make the NTFS test disk without a mount")
def test_ntfs_files_match_the_source(repo: Repository, tmp_path: Path) -> None:
    image = tmp_path / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkntfs", "-F", "-Q", "-L", "stasis", str(image)], check=True,
                   capture_output=True)
    sources = {"hello.txt": b"hello from NTFS\n",
               "random.bin": os.urandom(3 * MiB + 12345)}
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
        subprocess.run(["ntfscp", "-f", str(image), str(tmp_path / name), name], check=True,
                       capture_output=True)
    files = DiskFiles.open(repo, backup(repo, image))
    assert files.single and files.filesystems[0].fs is not None
    assert files.filesystems[0].fs.type == "ntfs"
    listed = {e.name: e for e in files.ls("/") if isinstance(e, Entry)}
    assert set(sources) <= set(listed)
    for name, data in sources.items():
        assert listed[name].size == len(data)
        assert read_file(files, f"/{name}") == data
    out = tmp_path / "out"
    out.mkdir()
    extract(files, ["/random.bin"], out)
    assert (out / "random.bin").read_bytes() == sources["random.bin"]
