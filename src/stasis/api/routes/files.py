"""``/points/{id}/files``: list, find and download the files of a point (``stasis files``).

Every route needs ``files:read`` and sees only the points whose VMs are all the
principal's (another tenant's point is not found). A download is read from the
repository as it is sent: one file (with its size, its name, an ETag and byte
ranges), or an archive of files and directories (zip or tar.zst) streamed without a
temporary copy. A client that goes away stops the reading at once: the response
closes its :class:`~stasis.app.files.Download`, which releases the repository's lock.
Every download is an audit line.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from stasis.api.context import ApiContext
from stasis.api.guard import GuardedRoute, needs, principal, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.app import audit
from stasis.app import files as ops
from stasis.app.auth import Principal
from stasis.app.models import FileEntry, VolumeRow
from stasis.app.scope import Scope

router = APIRouter(route_class=GuardedRoute, tags=["files"])

PERMISSION = "files:read"
VmQuery = Query(None, description="VM of the point (if it has several)")
DiskQuery = Query(None, description="disk of the VM (if it has several)")
RepoQuery = Query(None, description="served repository (default: the default one)")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def disposition(filename: str) -> str:
    """``Content-Disposition`` naming ``filename``: an ASCII fallback, and RFC 6266's
    ``filename*`` (UTF-8) when the name is not plain ASCII."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", filename) or "download"
    if fallback == filename:
        return f'attachment; filename="{fallback}"'
    encoded = urllib.parse.quote(filename.encode("utf-8", "surrogateescape"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class DownloadResponse(StreamingResponse):
    """Streams a :class:`~stasis.app.files.Download`, each piece read in a worker
    thread; the download is closed however the response ends (completed, the client
    gone, the server stopping), after any read in progress returns."""

    def __init__(self, download: ops.Download, *, status_code: int,
                 headers: dict[str, str]) -> None:
        self.download = download
        super().__init__(self._pieces(), status_code=status_code, headers=headers,
                         media_type=download.media_type)

    async def _pieces(self) -> AsyncIterator[bytes]:
        while True:
            piece = await anyio.to_thread.run_sync(next, self.download, None)
            if piece is None:
                return
            yield piece

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.download.close)


def _range(header: str | None) -> tuple[int | None, int | None] | None:
    """One ``bytes=first-last`` range; None for none, several or a malformed one (the
    whole file is sent then, as RFC 9110 allows)."""
    if header is None:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first = int(match.group(1)) if match.group(1) else None
    last = int(match.group(2)) if match.group(2) else None
    if first is not None and last is not None and last < first:
        return None
    return first, last


@router.get("/points/{point}/files", openapi_extra=needs(PERMISSION),
            response_model=Page[FileEntry | VolumeRow], response_model_exclude_unset=True)
def list_files(request: Request, point: str,
               path: str = Query("/", description="directory or file; VOLUME:/PATH on a "
                                                  "disk of several volumes"),
               vm: str | None = VmQuery, disk: str | None = DiskQuery,
               repo: str | None = RepoQuery, q: ListQuery = Depends(list_query),
               where: Scope = Depends(scope)) -> Page[FileEntry | VolumeRow]:
    """A directory of a disk of a point (one entry for a file; the volumes at the top of
    a disk of several), as ``stasis files ls``."""
    r = _ctx(request).repository(repo)
    m = ops.point_for(r, point, where)
    rows = ops.list_files(r, m.id, path, vm=vm, disk=disk)
    return paginate(rows, q, sorts={"name": lambda x: x.name, "size": lambda x: x.size,
                                    "type": lambda x: x.type},
                    default="name", ident=lambda x: x.path if isinstance(x, FileEntry)
                    else x.name)


@router.get("/points/{point}/files/find", openapi_extra=needs(PERMISSION),
            response_model=Page[FileEntry])
def find_files(request: Request, point: str,
               pattern: str = Query(..., min_length=1, description="glob on the name "
                                    "(*.conf), or on the path when it holds a '/'"),
               vm: str | None = VmQuery, disk: str | None = DiskQuery,
               repo: str | None = RepoQuery, q: ListQuery = Depends(list_query),
               where: Scope = Depends(scope)) -> Page[FileEntry]:
    """Files of a point by name or path, on every disk unless ``vm``/``disk`` narrow it
    (as ``stasis files find``)."""
    r = _ctx(request).repository(repo)
    m = ops.point_for(r, point, where)
    found = ops.find_files(r, m.id, pattern, vm=vm, disk=disk)
    return paginate(found, q, sorts={"path": lambda e: e.path, "name": lambda e: e.name,
                                     "size": lambda e: e.size},
                    default="path", ident=lambda e: f"{e.vm}/{e.disk}:{e.path}")


_DOWNLOAD = {200: {"content": {"application/octet-stream": {}},
                   "description": "the file's bytes"},
             206: {"content": {"application/octet-stream": {}},
                   "description": "the bytes of the range asked for"}}


@router.get("/points/{point}/files/content", openapi_extra=needs(PERMISSION),
            response_class=StreamingResponse, responses=_DOWNLOAD)  # type: ignore[arg-type]
def file_content(request: Request, point: str,
                 path: str = Query(..., min_length=1, description="the file"),
                 vm: str | None = VmQuery, disk: str | None = DiskQuery,
                 repo: str | None = RepoQuery, who: Principal = Depends(principal),
                 where: Scope = Depends(scope)) -> DownloadResponse:
    """Download one file of a point, read from the repository as it is sent. A
    ``Range: bytes=first-last`` header asks for part of it (206)."""
    ctx = _ctx(request)
    r = ctx.repository(repo)
    m = ops.point_for(r, point, where)
    asked = _range(request.headers.get("range"))
    first, last = asked if asked is not None else (None, None)
    d = ops.download_file(r, m.id, path, vm=vm, disk=disk, first=first, last=last)
    try:
        headers = {"Content-Disposition": disposition(d.filename), "ETag": d.etag,
                   "Accept-Ranges": "bytes"}
        status = 200
        length = d.size or 0
        if d.range is not None:
            status = 206
            length = d.range[1] - d.range[0] + 1
            headers["Content-Range"] = f"bytes {d.range[0]}-{d.range[1]}/{d.size}"
        headers["Content-Length"] = str(length)
        audit.record(ctx.catalog, who, "files.download", f"point:{m.id}",
                     detail={"paths": [path], "vm": vm, "disk": disk,
                             "range": list(d.range) if d.range else None})
    except BaseException:
        d.close()
        raise
    return DownloadResponse(d, status_code=status, headers=headers)


_ARCHIVE = {200: {"content": {"application/zip": {}, "application/zstd": {}},
                  "description": "the archive, streamed as it is read"}}


@router.get("/points/{point}/files/archive", openapi_extra=needs(PERMISSION),
            response_class=StreamingResponse, responses=_ARCHIVE)  # type: ignore[arg-type]
def file_archive(request: Request, point: str,
                 path: list[str] = Query(["/"], description="files and directories "
                                         "(recursively); repeat for several"),
                 format: Literal["zip", "tar.zst"] = Query("zip", description="zip or "
                                                            "tar.zst"),
                 vm: str | None = VmQuery, disk: str | None = DiskQuery,
                 repo: str | None = RepoQuery, who: Principal = Depends(principal),
                 where: Scope = Depends(scope)) -> DownloadResponse:
    """Download files and directories of a point as one archive, streamed as they are
    read (no temporary copy; the size is not known in advance)."""
    ctx = _ctx(request)
    r = ctx.repository(repo)
    m = ops.point_for(r, point, where)
    d = ops.download_archive(r, m.id, path, format, vm=vm, disk=disk)
    try:
        audit.record(ctx.catalog, who, "files.archive", f"point:{m.id}",
                     detail={"paths": path, "format": format, "vm": vm, "disk": disk})
    except BaseException:
        d.close()
        raise
    return DownloadResponse(d, status_code=200,
                            headers={"Content-Disposition": disposition(d.filename),
                                     "ETag": d.etag})
