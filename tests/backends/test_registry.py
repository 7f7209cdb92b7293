"""The backend registry: a location is a local path or a URL of a known scheme, and
a URL of any other scheme is refused, never taken as a relative path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stasis.backends import SCHEMES, LocalBackend, open_backend, scheme_of
from stasis.errors import UnsupportedLocation, UsageError


def test_paths_and_file_urls_open_the_local_backend(tmp_path: Path) -> None:
    for location in (str(tmp_path / "r"), tmp_path / "r", f"file://{tmp_path}/r",
                     f"file://localhost{tmp_path}/r", f"file:{tmp_path}/r"):
        b = open_backend(location)
        assert isinstance(b, LocalBackend) and b.url == str(tmp_path / "r"), location


def test_a_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.chdir(tmp_path)
    assert open_backend("repo").url == str(tmp_path / "repo")
    assert open_backend("./odd:name").url == str(tmp_path / "odd:name")


@pytest.mark.parametrize("location", ["gs://bucket/x", "GS://bucket/x", "gs:/bucket/x",
                                      "sftp://host/r", "rest:http://h/", "odd:name"])
def test_an_unknown_scheme_is_refused(location: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedLocation) as e:
        open_backend(location)
    assert e.value.exit_code == 36
    assert location in e.value.message and "not taken as a local path" in e.value.message
    assert "file://" in e.value.message
    assert os.listdir(tmp_path) == []


def test_file_urls_name_this_host_and_an_absolute_path() -> None:
    for location in ("file://otherhost/r", "file:relative/r"):
        with pytest.raises(UsageError):
            open_backend(location)


def test_one_entry_per_scheme() -> None:
    assert sorted(SCHEMES) == ["file", "s3"]
    assert scheme_of("s3://b/x") == "s3" and scheme_of("/srv/repo") is None
    assert scheme_of("./a:b") is None
