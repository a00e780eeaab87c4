"""Container archive endpoints: ``docker cp`` (stat, read, extract) and ``docker export``."""

from __future__ import annotations

import base64
import json

from dockyard.api.app import Router
from dockyard.api.messages import Request, Response
from dockyard.api.params import body_chunks, query_bool
from dockyard.engine.archive import ArchiveService, PathStat
from dockyard.errors import InvalidParameter

_CHUNK = 256 << 10
_TAR = "application/x-tar"
_STAT_HEADER = "X-Docker-Container-Path-Stat"


def register(router: Router, archives: ArchiveService) -> None:
    """Add the archive routes."""

    async def container_archive_info(req: Request) -> Response:
        stat = await archives.stat(req.params["id"], _path(req))
        return Response(200, b"", None, [(_STAT_HEADER, _encode_stat(stat))])

    async def container_archive(req: Request) -> None:
        async with archives.archive(req.params["id"], _path(req)) as job:
            out = await req.start_stream(200, _TAR, [(_STAT_HEADER, _encode_stat(job.stat))])
            await job.stream(out.write)
            await out.end()

    async def container_export(req: Request) -> None:
        async with archives.export(req.params["id"]) as stream:
            out = await req.start_stream(200, _TAR)
            await stream(out.write)
            await out.end()

    async def put_container_archive(req: Request) -> Response:
        # On an error the answer goes out at once, whatever is left of the body (see api.http DISCARD_LIMIT).
        await archives.extract(
            req.params["id"],
            _path(req),
            body_chunks(req, _CHUNK),
            no_overwrite_dir_non_dir=query_bool(req, "noOverwriteDirNonDir"),
            copy_uid_gid=query_bool(req, "copyUIDGID"),
        )
        return Response(200, b"", None)

    r = router.add
    r("HEAD", "/containers/{id}/archive", "ContainerArchiveInfo", container_archive_info)
    r("GET", "/containers/{id}/archive", "ContainerArchive", container_archive)
    r("PUT", "/containers/{id}/archive", "PutContainerArchive", put_container_archive, stream_body=True)
    r("GET", "/containers/{id}/export", "ContainerExport", container_export)


def _path(req: Request) -> str:
    path = req.arg("path") or ""
    if not path:
        raise InvalidParameter("bad parameter: pathcannot be empty")  # sic: dockerd's text, missing space
    return path


def _encode_stat(stat: PathStat) -> str:
    doc = json.dumps(stat.to_wire(), separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(doc.encode()).decode()
