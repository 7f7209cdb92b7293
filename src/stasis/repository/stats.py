"""Repository statistics: what the points hold and what the store takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stasis.repository.repo import Repository


@dataclass
class RepoInfo:
    path: str
    id: str
    encryption: str
    chunk_size: int
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


def repo_info(repo: Repository) -> RepoInfo:
    points = repo.points()
    logical = referenced = 0
    lengths: dict[bytes, int] = {}
    seen_indexes: dict[str, tuple[int, list[tuple[bytes, int]]]] = {}
    for point in points:
        for _vm, disk in point.streams():
            logical += disk.virtual_size
            if disk.index not in seen_indexes:
                index = repo.load_index(disk.index)
                stored = [(n, index.chunk_length(i)) for i, n in index.stored()]
                seen_indexes[disk.index] = (sum(size for _, size in stored), stored)
                for name, size in stored:
                    lengths[name] = size
            referenced += seen_indexes[disk.index][0]
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
        points=len(points),
        logical_size=logical,
        referenced_size=referenced,
        unique_size=unique,
        stored_size=stored_size,
        chunk_count=count,
        dedup_ratio=round(referenced / unique, 3) if unique else 1.0,
        compression_ratio=round(unique / stored_size, 3) if stored_size else 1.0,
    )
