"""Container filesystem archives: ``docker cp`` both ways (stat, read, extract) and ``docker export``.

They work on running and stopped containers alike: a stopped container's root filesystem is mounted for
the duration (a use count keeps it mounted while any archive needs it; the last one unmounts it unless the
container runs by then, when the mount belongs to the run). Every path is resolved inside the container's
root as if chrooted (:mod:`dockyard.store.inroot`); the tar work runs in a thread of its own per request
(a slow client must not hold the shared executor) and talks to the event loop through :class:`LoopBridge`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from dockyard.engine.archive_bridge import BodyReader, ChunkSink, LoopBridge
from dockyard.engine.container import Container
from dockyard.engine.create_config import parse_bind
from dockyard.engine.lifecycle import LifecycleDeps
from dockyard.engine.ocispec import resolve_user
from dockyard.errors import InvalidParameter, NotFound, Unsupported
from dockyard.store import archive_out
from dockyard.store.archive_in import ExtractOptions, extract_archive
from dockyard.store.archive_out import PathStat, Source
from dockyard.store.inroot import clean_abs, follow_in_scope, open_in_root

__all__ = ["ArchiveJob", "ArchiveService", "PathStat"]

Write = Callable[[bytes], Awaitable[None]]


def _not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ref}")


@dataclass
class ArchiveJob:
    """A located path, ready to be streamed as a tar: ``stat`` first (it goes in the header)."""

    _source: Source
    _bridge: LoopBridge

    @property
    def stat(self) -> PathStat:
        """The located path's stat (``X-Docker-Container-Path-Stat``)."""
        return self._source.stat

    async def stream(self, write: Write) -> None:
        """Send the tar through ``write`` (raises what ``write`` raises when the client goes away)."""
        await _stream_tar(self._bridge, write, lambda sink: archive_out.write_source(self._source, sink))


class ArchiveService:
    """The archive use-cases over the container repository and the rootfs driver."""

    def __init__(self, deps: LifecycleDeps) -> None:
        self.d = deps

    async def stat(self, ref: str, path: str) -> PathStat:
        """``HEAD /containers/{id}/archive``: the path's stat, the last component not followed."""
        async with self.archive(ref, path) as job:
            return job.stat

    @contextlib.asynccontextmanager
    async def archive(self, ref: str, path: str) -> AsyncIterator[ArchiveJob]:
        """``GET /containers/{id}/archive``: locate ``path`` (errors come before any byte is sent)."""
        c = self.d.repo.get(ref)
        _check_binds(c, path)
        async with self._root(c) as root_fd:
            bridge = LoopBridge()
            source = await bridge.run(lambda: _locate(root_fd, path, ref))
            try:
                yield ArchiveJob(source, bridge)
            finally:
                source.close()

    @contextlib.asynccontextmanager
    async def export(self, ref: str) -> AsyncIterator[Callable[[Write], Awaitable[None]]]:
        """``GET /containers/{id}/export``: yields the function that streams the whole filesystem."""
        c = self.d.repo.get(ref)
        async with self._root(c) as root_fd:
            bridge = LoopBridge()

            async def stream(write: Write) -> None:
                await _stream_tar(bridge, write, lambda sink: archive_out.write_export(root_fd, sink))

            yield stream

    async def extract(
        self,
        ref: str,
        path: str,
        body: AsyncIterator[bytes],
        *,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
    ) -> None:
        """``PUT /containers/{id}/archive``: extract the tar ``body`` into the directory ``path``."""
        c = self.d.repo.get(ref)
        async with self._root(c) as root_fd:
            bridge = LoopBridge()
            dest = await bridge.run(lambda: _extraction_point(root_fd, path, ref))
            _check_binds(c, dest)
            if c.host_config.get("ReadonlyRootfs"):
                raise InvalidParameter("container rootfs is marked read-only")
            opts = ExtractOptions(no_overwrite_dir_non_dir, await self._chown(c, root_fd, copy_uid_gid))
            reader = BodyReader(bridge, body)
            await bridge.run(lambda: extract_archive(cast(BinaryIO, reader), root_fd, dest, opts))

    async def _chown(self, c: Container, root_fd: int, copy_uid_gid: bool) -> tuple[int, int] | None:
        """``copyUIDGID``: everything belongs to the container's user (dockerd: only when ``User`` is set)."""
        user = c.config.get("User") or ""
        if not copy_uid_gid or not user:
            return None
        return await LoopBridge().run(lambda: _user_ids(root_fd, user))

    @contextlib.asynccontextmanager
    async def _root(self, c: Container) -> AsyncIterator[int]:
        """The container's root directory, mounted for as long as the block runs.

        The rootfs layer counts this reader (held before mounting), so a container that exits meanwhile
        leaves its filesystem mounted; the last reader of a stopped container unmounts it.
        """
        rootfs = self.d.rootfs
        async with c.live.lock:
            rootfs.hold(c.id)
            try:
                path = await rootfs.mount_rootfs(c.id, self.d.images.lower_dirs(c.image_id))
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except BaseException:
                rootfs.let_go(c.id)
                raise
        try:
            yield fd
        finally:
            os.close(fd)
            async with c.live.lock:
                if rootfs.let_go(c.id) == 0 and not c.state.running:
                    await rootfs.unmount(c.id)


async def _stream_tar(bridge: LoopBridge, write: Write, tar: Callable[[ChunkSink], None]) -> None:
    """Run ``tar`` in the bridge's thread, its output sent through ``write`` in chunks."""
    sink = ChunkSink(bridge, write)

    def job() -> None:
        tar(sink)
        sink.flush()  # tarfile never closes a file object it was given: the last chunk is ours to send

    await bridge.run(job)


def _locate(root_fd: int, path: str, ref: str) -> Source:
    try:
        return archive_out.locate(root_fd, path)
    except FileNotFoundError:
        raise _not_found(path, ref) from None


def _extraction_point(root_fd: int, path: str, ref: str) -> str:
    """dockerd resolves the destination fully (a symlink to a directory is followed) and wants a directory."""
    resolved = follow_in_scope(root_fd, "/" + path)
    try:
        fd = open_in_root(root_fd, resolved, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, ref) from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InvalidParameter("extraction point is not a directory")
    finally:
        os.close(fd)
    return resolved


def _check_binds(c: Container, path: str) -> None:
    """Bind mounts live in the container's mount namespace only; what is under one is not in the rootfs."""
    target = clean_abs(path)
    for dest in _bind_destinations(c):
        if target == dest or target.startswith(dest.rstrip("/") + "/"):
            raise Unsupported(f"copying to or from a bind mount ({dest}) is not supported yet")


def _bind_destinations(c: Container) -> list[str]:
    hc = c.host_config
    dests = [parse_bind(b)[1] for b in hc.get("Binds") or ()]  # validated when the container was created
    dests += [str(m.get("Target", "")) for m in hc.get("Mounts") or () if m.get("Type", "bind") == "bind"]
    return [clean_abs(d) for d in dests if d.startswith("/")]


_MAX_DB = 4 << 20


def _user_ids(root_fd: int, user: str) -> tuple[int, int]:
    """The container user's uid and gid from *its* /etc/passwd and /etc/group.

    Both files are read inside the root (a symlinked /etc must not lead to the host's) as bounded regular
    files, copied to a private directory, and resolved there by the same code that starts containers.
    """
    with tempfile.TemporaryDirectory(prefix="dockyard-user-") as tmp:
        os.mkdir(os.path.join(tmp, "etc"))
        for name in ("passwd", "group"):
            data = _read_small_file(root_fd, f"/etc/{name}")
            with open(os.path.join(tmp, "etc", name), "wb") as f:
                f.write(data)
        uid, gid, _ = resolve_user(Path(tmp), user)
    return uid, gid


def _read_small_file(root_fd: int, path: str) -> bytes:
    try:
        fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return b""
    try:
        return os.read(fd, _MAX_DB) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    finally:
        os.close(fd)
