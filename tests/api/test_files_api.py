"""``/points/{id}/files``: a real ext4 image (the test kit's sample tree, with a non-ASCII
name, nesting, a symlink and files larger than a chunk), backed up, then listed, found
and downloaded through the API: one file, ranges, and zip and tar.zst archives read
back and compared byte for byte with the source."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import threading
import urllib.parse
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.app.auth import Tenant
from stasis.catalog.audit import AuditLog
from stasis.protection.backup import back_up_images
from stasis.repository import Manifest, Repository
from stasis_testkit import fsimages, sample_tree
from stasis_testkit.disks import MiB

Client = Callable[..., TestClient]
UNICODE = "\u00fcn\u00efc\u00f6de.txt"
ROUTES = ("files", "files/find?pattern=*.txt", "files/content?path=/README",
          "files/archive?path=/deep")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_tree(tmp_path_factory.mktemp("tree") / "sample")


@pytest.fixture(scope="module")
def image(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fsimages.ext4_disk(tmp_path_factory.mktemp("img") / "web1.img", tree,
                              size=64 * MiB).path


@pytest.fixture
def point(repo: Repository, image: Path) -> Manifest:
    # A point of images is the point of a "VM" named like the image: web1.
    return back_up_images(repo, [image], name="web1")


def url(point: Manifest, route: str) -> str:
    return f"/api/v1/points/{point.id}/{route}"


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def links_of(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): os.readlink(p) for p in root.rglob("*")
            if p.is_symlink()}


def dirs_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_dir() and not p.is_symlink()}


def walk(c: TestClient, first: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = c.get(first + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next"]
        if cursor is None:
            return items


# ------------------------------------------------------------------ listing and find


def test_list_a_directory_page_by_page(client: Client, point: Manifest, tree: Path) -> None:
    c = client("restore")
    items = walk(c, url(point, "files?path=/&limit=3"))
    assert [i["name"] for i in items] == sorted({p.name for p in tree.iterdir()}
                                                | {"lost+found"})
    by_name = {i["name"]: i for i in items}
    readme = by_name["README"]
    st = os.lstat(tree / "README")
    assert (readme["type"], readme["size"], readme["path"]) == ("file", st.st_size, "/README")
    assert readme["mode"] == f"{stat.S_IMODE(st.st_mode):04o}"
    assert readme["mtime_ns"] == st.st_mtime_ns and readme["mode_text"].startswith("-")
    assert (by_name["link-to-log"]["type"], by_name["link-to-log"]["link"]) == \
        ("symlink", "data/log.txt")
    assert by_name[UNICODE]["type"] == "file"
    data = c.get(url(point, "files"), params={"path": "/data", "sort": "-size"}).json()
    assert [i["name"] for i in data["items"]] == ["random-5m.bin", "log.txt",
                                                  "random-64k.bin"]


def test_find_by_name_and_by_path(client: Client, point: Manifest) -> None:
    c = client("restore")
    found = c.get(url(point, "files/find"), params={"pattern": "*.txt"}).json()["items"]
    assert {f["path"] for f in found} == {"/data/log.txt", "/deep/a/b/c/d/leaf.txt",
                                          "/name with spaces.txt", "/" + UNICODE}
    assert {(f["vm"], f["disk"]) for f in found} == {("web1", "web1.img")}
    deep = c.get(url(point, "files/find"), params={"pattern": "/deep/*/b"}).json()["items"]
    assert [f["path"] for f in deep] == ["/deep/a/b"]


def test_find_over_every_disk_passes_a_disk_without_a_file_system(
        client: Client, repo: Repository, image: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(4 << 20)
    two = back_up_images(repo, [blank, image], name="web1")
    c = client("restore")
    found = c.get(url(two, "files/find"), params={"pattern": "log.txt"})
    assert found.status_code == 200
    assert [(f["disk"], f["path"]) for f in found.json()["items"]] == [
        ("web1.img", "/data/log.txt")]
    only_blank = c.get(url(two, "files/find"), params={"pattern": "*", "disk": "blank.img"})
    assert only_blank.status_code == 400 and only_blank.json()["kind"] == "FilesystemUnknown"


# ------------------------------------------------------------------ one file


def test_download_a_file_with_its_name_etag_and_ranges(client: Client, point: Manifest,
                                                       tree: Path,
                                                       api_ctx: ApiContext) -> None:
    c = client("restore")
    want = (tree / "data/random-5m.bin").read_bytes()
    r = c.get(url(point, "files/content"), params={"path": "/data/random-5m.bin"})
    assert r.status_code == 200
    assert r.content == want
    assert r.headers["content-length"] == str(len(want))
    assert r.headers["content-disposition"] == 'attachment; filename="random-5m.bin"'
    etag = r.headers["etag"]
    again = c.get(url(point, "files/content"), params={"path": "/data/random-5m.bin"})
    assert again.headers["etag"] == etag
    other = c.get(url(point, "files/content"), params={"path": "/data/log.txt"})
    assert other.headers["etag"] != etag

    part = c.get(url(point, "files/content"), params={"path": "/data/random-5m.bin"},
                 headers={"Range": "bytes=1048570-2097160"})
    assert part.status_code == 206
    assert part.content == want[1048570:2097161]
    assert part.headers["content-range"] == f"bytes 1048570-2097160/{len(want)}"
    assert part.headers["content-length"] == str(2097161 - 1048570)
    tail = c.get(url(point, "files/content"), params={"path": "/data/random-5m.bin"},
                 headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == want[-100:]
    beyond = c.get(url(point, "files/content"), params={"path": "/data/random-5m.bin"},
                   headers={"Range": f"bytes={len(want)}-"})
    assert beyond.status_code == 416
    assert beyond.json()["kind"] == "RangeNotSatisfiable" and beyond.json()["code"] == 68

    uni = c.get(url(point, "files/content"), params={"path": "/" + UNICODE})
    assert uni.content == (tree / UNICODE).read_bytes()
    disp = uni.headers["content-disposition"]
    assert disp.startswith('attachment; filename="_n_c_de.txt"; filename*=UTF-8\'\'')
    assert urllib.parse.unquote(disp.split("''", 1)[1]) == UNICODE

    lines = AuditLog(api_ctx.catalog).list(action="files.download")
    assert {tuple(e.detail["paths"]) for e in lines} == {("/data/random-5m.bin",),
                                                        ("/data/log.txt",), ("/" + UNICODE,)}
    assert all(e.object == f"point:{point.id}" and (e.user or "").startswith("restore-")
               for e in lines)
    assert len(lines) == 6  # every download, ranges included (not the refused one)


def test_bad_paths_answer_a_problem(client: Client, point: Manifest) -> None:
    c = client("restore")
    missing = c.get(url(point, "files/content"), params={"path": "/etc/shadow"})
    assert missing.status_code == 404
    body = missing.json()
    assert (body["kind"], body["code"]) == ("FileNotInPoint", 33)
    assert "/etc/shadow" in body["detail"]
    assert missing.headers["content-type"] == "application/problem+json"
    escape = c.get(url(point, "files/content"), params={"path": "/data/../../etc/passwd"})
    assert escape.status_code == 404 and "'..' is not allowed" in escape.json()["detail"]
    listed = c.get(url(point, "files"), params={"path": "/../.."})
    assert listed.status_code == 404 and listed.json()["kind"] == "FileNotInPoint"
    a_dir = c.get(url(point, "files/content"), params={"path": "/deep"})
    assert a_dir.status_code == 404 and "not a file" in a_dir.json()["detail"]
    archive = c.get(url(point, "files/archive"), params={"path": ["/deep", "/nope"]})
    assert archive.status_code == 404 and archive.json()["kind"] == "FileNotInPoint"
    bad = c.get(url(point, "files/archive"), params={"format": "rar"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.format"
    unknown = c.get("/api/v1/points/0123456789ab/files")
    assert unknown.status_code == 404 and unknown.json()["kind"] == "PointNotFound"


# ------------------------------------------------------------------ archives


def test_zip_of_the_whole_disk_matches_the_source(client: Client, point: Manifest,
                                                  tree: Path, tmp_path: Path) -> None:
    r = client("restore").get(url(point, "files/archive"), params={"format": "zip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == \
        f'attachment; filename="point-{point.id[:12]}.zip"'
    assert "content-length" not in r.headers  # streamed: not known in advance
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.testzip() is None
    out = tmp_path / "out"
    for info in zf.infolist():
        mode = info.external_attr >> 16
        target = out / info.filename
        if stat.S_ISLNK(mode):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(zf.read(info).decode())
        else:
            zf.extract(info, out)
            if stat.S_ISREG(mode):
                assert stat.S_IMODE(mode) == stat.S_IMODE(os.lstat(tree / info.filename)
                                                          .st_mode), info.filename
    for name in ("lost+found",):
        (out / name).rmdir()
    assert files_of(out) == files_of(tree)
    assert links_of(out) == links_of(tree)
    assert dirs_of(out) == dirs_of(tree)
    # every entry is streamed: sizes in data descriptors, names in UTF-8
    assert all(i.flag_bits & 0x08 for i in zf.infolist())
    assert UNICODE in zf.namelist()


def test_tar_zst_of_a_selection_matches_the_source(client: Client, point: Manifest,
                                                   tree: Path, tmp_path: Path) -> None:
    r = client("restore").get(url(point, "files/archive"), params={
        "format": "tar.zst", "path": ["/deep", "/data/random-5m.bin", "/" + UNICODE,
                                      "/link-to-log"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zstd"
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(r.content)).read()
    assert len(raw) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) == {"deep", "deep/a", "deep/a/b", "deep/a/b/c", "deep/a/b/c/d",
                                "deep/a/b/c/d/leaf.txt", "random-5m.bin", UNICODE,
                                "link-to-log"}
        for name, src in (("random-5m.bin", "data/random-5m.bin"), (UNICODE, UNICODE),
                          ("deep/a/b/c/d/leaf.txt", "deep/a/b/c/d/leaf.txt")):
            f = tf.extractfile(members[name])
            assert f is not None and f.read() == (tree / src).read_bytes(), name
            st = os.lstat(tree / src)
            assert members[name].mode == stat.S_IMODE(st.st_mode)
            assert int(members[name].mtime * 1e9) // 1000 == st.st_mtime_ns // 1000
        assert members["link-to-log"].issym()
        assert members["link-to-log"].linkname == "data/log.txt"
        assert members["deep/a"].isdir()
        if sys.version_info >= (3, 12):
            tf.extractall(tmp_path / "out", filter="data")


def test_a_download_stopped_by_the_client_stops_reading_and_leaves_nothing(
        client: Client, point: Manifest, repo: Repository) -> None:
    c = client("restore")
    with c.stream("GET", url(point, "files/archive"), params={"format": "zip"}) as r:
        assert r.status_code == 200
        pieces = r.iter_bytes()
        got = next(pieces)
        assert got.startswith(b"PK")
        assert repo.locks.locks(), "the download holds a shared lock while it reads"
    # The response was closed mid-way: the app's reading ended with it.
    assert repo.locks.locks() == []
    assert not [t for t in threading.enumerate() if t.name == "lock-refresh"]
    readers = [f for f in _frames() if f.endswith(("archive.py", "diskread.py"))]
    assert readers == [], "a thread is still reading the point"


def _frames() -> list[str]:
    found = []
    for frame in sys._current_frames().values():
        f: Any = frame
        while f is not None:
            found.append(f.f_code.co_filename)
            f = f.f_back
    return found


def test_the_archive_is_read_as_it_is_sent(client: Client, point: Manifest,
                                           tree: Path) -> None:
    # Each piece is at most what one block of a file adds: the archive is never
    # assembled whole in memory.
    c = client("restore")
    with c.stream("GET", url(point, "files/archive"), params={"format": "tar.zst"}) as r:
        sizes = [len(p) for p in r.iter_raw()]
    assert len(sizes) > 5  # the source's biggest file alone spans six blocks
    assert max(sizes) < 2 * MiB


# ------------------------------------------------------------------ who may


@pytest.mark.parametrize("role", ["auditor", "viewer", "backup"])
def test_roles_without_files_read_are_refused(client: Client, point: Manifest,
                                              role: str, api_ctx: ApiContext) -> None:
    c = client(role)
    for route in ROUTES:
        r = c.get(url(point, route))
        assert r.status_code == 403, route
        assert r.json()["permission"] == "files:read"
    assert AuditLog(api_ctx.catalog).list(action="files.") == []


def test_another_tenants_point_does_not_exist(client: Client, point: Manifest,
                                              api_ctx: ApiContext) -> None:
    mine = client("restore", tenant=Tenant("acme", vms=frozenset({"web1"})))
    theirs = client("restore", tenant=Tenant("other", vms=frozenset({"db1"})))
    labelled = client("restore", tenant=Tenant("lab", labels={"team": "x"}))
    missing = client("restore").get(url(point, "files").replace(point.id, "f" * 64))
    for route in ROUTES:
        assert mine.get(url(point, route)).status_code == 200, route
        for other in (theirs, labelled):
            r = other.get(url(point, route))
            assert r.status_code == 404, route
            assert r.json()["kind"] == "PointNotFound"
            assert set(r.json()) == set(missing.json())
            prefix = other.get(url(point, route).replace(point.id, point.id[:8]))
            assert prefix.status_code == 404
    assert AuditLog(api_ctx.catalog).list(tenant="other") == []
