"""Repository statistics: what the points hold and what the store takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stasis.repository.index import NAME_LEN, ZERO_NAME, DiskIndex
from stasis.repository.repo import Repository


@dataclass
class RepoInfo:
    path: str
    id: str
    encryption: str
    chunk_size: int
    format_version: int
    points: int
    logical_size: int  # sum of the virtual sizes of every disk of every point
    referenced_size: int  # sum over points of the bytes of non-zero chunks
    unique_size: int  # plaintext bytes of the distinct chunks referenced
    stored_size: int  # bytes every chunk object takes in the store
    chunk_count: int
    dedup_ratio: float  # referenced / unique
    compression_ratio: float  # unique / stored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _referenced(repo: Repository, index: DiskIndex, page_bytes: dict[bytes, int],
                lengths: dict[bytes, int]) -> int:
    """The bytes an index references, its distinct chunks added to ``lengths``."""
    total = 0
    for k, page in enumerate(index.page_names()):
        if page == ZERO_NAME:
            continue
        if page is None or page not in page_bytes:
            first = k * index.page_entries
            size = 0
            entries = index.page(k)
            for j, at in enumerate(range(0, len(entries), NAME_LEN)):
                name = entries[at : at + NAME_LEN]
                if name != ZERO_NAME:
                    lengths[name] = index.chunk_length(first + j)
                    size += lengths[name]
            if page is None:  # format 1: the page is part of the index
                total += size
                continue
            page_bytes[page] = size
        total += page_bytes[page]
    return total


def repo_info(repo: Repository) -> RepoInfo:
    points = repo.points()
    logical = referenced = 0
    lengths: dict[bytes, int] = {}
    # What each distinct index and page references is counted once, then summed per
    # point: a page shared by a thousand points is read once.
    index_bytes: dict[str, int] = {}
    page_bytes: dict[bytes, int] = {}
    for point in points:
        for _vm, disk in point.streams():
            logical += disk.virtual_size
            if disk.index not in index_bytes:
                index_bytes[disk.index] = _referenced(repo, repo.load_index(disk.index),
                                                      page_bytes, lengths)
            referenced += index_bytes[disk.index]
    stored_size = count = 0
    for _name, size in repo.chunk_objects():
        stored_size += size
        count += 1
    unique = sum(lengths.values())
    return RepoInfo(
        path=repo.url,
        id=repo.id,
        encryption=str(repo.config["encryption"]),
        chunk_size=repo.chunk_size,
        format_version=repo.format_version,
        points=len(points),
        logical_size=logical,
        referenced_size=referenced,
        unique_size=unique,
        stored_size=stored_size,
        chunk_count=count,
        dedup_ratio=round(referenced / unique, 3) if unique else 1.0,
        compression_ratio=round(unique / stored_size, 3) if stored_size else 1.0,
    )
