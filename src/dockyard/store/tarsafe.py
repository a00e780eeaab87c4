"""Safe extraction of one image layer tar into a directory, computing its diff id on the way.

Why not ``tarfile.extractall(filter="data")``: image layers legitimately hold absolute symlinks
(``/bin/sh -> /bin/busybox``, relative to the *container's* root), setuid binaries, device nodes and
ownership, all of which the ``data`` filter refuses or strips. Instead every path is resolved one
component at a time with ``openat(O_NOFOLLOW)`` from the layer's root directory descriptor, so no
member can be written through a symlink, and ``..`` components are refused outright. Hardlink
targets are resolved the same way, inside the layer. Docker whiteouts become overlayfs whiteouts.

tarfile is used only as a streaming header parser (mode ``r|``); its member list is cleared as we go
so many-file archives cost no memory, and file data is copied in chunks, so memory stays flat and the
disk (checked periodically) is the only bound.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from dockyard.errors import InvalidParameter, SystemFailure, Unsupported
from dockyard.store.tarmember import apply_fd_meta, create_entry, iter_members, remove_entry

__all__ = ["ExtractResult", "extract_layer", "open_decompressed"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_DISK_RESERVE = 64 << 20
_DISK_CHECK_EVERY = 64 << 20


@dataclass
class ExtractResult:
    """What an extraction produced."""

    diff_id: str
    size: int


class _HashingReader:
    """A read-only file object that hashes every byte read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hasher = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def open_decompressed(raw: BinaryIO) -> IO[bytes]:
    """Wrap ``raw`` in the decompressor its magic bytes call for (gzip, bzip2, xz, or none).

    Raises:
        Unsupported: zstd-compressed input.
    """
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw, "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, "rb")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise Unsupported("zstd-compressed layers are not supported")
    return raw


def _parts(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidParameter(f"invalid tar member {name!r}: path escapes the layer")
    return parts


class _Extractor:
    def __init__(self, root_fd: int, dest: str) -> None:
        self.root_fd = root_fd
        self.dest = dest
        self.size = 0
        self.since_check = 0
        self.dir_times: list[tuple[list[str], float]] = []

    def open_dir(self, parts: list[str], create: bool = True) -> int:
        """Open the directory ``parts`` under the root without following any symlink."""
        fd = os.dup(self.root_fd)
        try:
            for comp in parts:
                nxt = self._open_child_dir(fd, comp, create)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_child_dir(self, fd: int, comp: str, create: bool) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            return os.open(comp, flags, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(comp, 0o755, dir_fd=fd)
            return os.open(comp, flags, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise InvalidParameter(f"invalid tar member: {comp!r} is not a directory (symlink?)") from exc
            raise

    def member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        parts = _parts(info.name)
        if not parts:
            return
        parent = self.open_dir(parts[:-1])
        try:
            self._place(tar, info, parent, parts)
        finally:
            os.close(parent)

    def _place(self, tar: tarfile.TarFile, info: tarfile.TarInfo, parent: int, parts: list[str]) -> None:
        base = parts[-1]
        if base == _OPAQUE:
            os.setxattr(parent, "trusted.overlay.opaque", b"y")
            return
        if base.startswith(_WHITEOUT):
            target = base[len(_WHITEOUT) :]
            _remove(parent, target)
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            return
        if info.isdir():
            self._dir(info, parent, parts)
            return
        _remove(parent, base)
        if info.islnk():
            self._hardlink(info, parent, base)
        elif not create_entry(tar, info, parent, base, (info.uid, info.gid), self._account):
            raise InvalidParameter(f"unsupported tar member type {info.type!r} for {info.name!r}")

    def _dir(self, info: tarfile.TarInfo, parent: int, parts: list[str]) -> None:
        base = parts[-1]
        try:
            st = os.lstat(base, dir_fd=parent)
            if not stat.S_ISDIR(st.st_mode):
                _remove(parent, base)
        except FileNotFoundError:
            pass
        fd = self._open_child_dir(parent, base, create=True)
        try:
            apply_fd_meta(fd, info, (info.uid, info.gid))
        finally:
            os.close(fd)
        self.dir_times.append((parts, float(info.mtime)))

    def _hardlink(self, info: tarfile.TarInfo, parent: int, base: str) -> None:
        src_parts = _parts(info.linkname)
        if not src_parts:
            raise InvalidParameter(f"invalid hardlink {info.name!r} -> {info.linkname!r}")
        src_dir = self.open_dir(src_parts[:-1], create=False)
        try:
            os.link(src_parts[-1], base, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise InvalidParameter(f"invalid hardlink {info.name!r}: target not in layer") from exc
        finally:
            os.close(src_dir)

    def _account(self, n: int) -> None:
        self.size += n
        self.since_check += n
        if self.since_check >= _DISK_CHECK_EVERY:
            self.since_check = 0
            st = os.statvfs(self.dest)
            if st.f_bavail * st.f_frsize < _DISK_RESERVE:
                raise SystemFailure("no space left on device while extracting layer")

    def restore_dir_times(self) -> None:
        for parts, mtime in reversed(self.dir_times):
            try:
                fd = self.open_dir(parts, create=False)
            except (InvalidParameter, FileNotFoundError):
                continue  # replaced by a later member
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def _remove(parent: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return
    remove_entry(parent, name, stat.S_ISDIR(st.st_mode))


def extract_layer(raw: BinaryIO, dest: str) -> ExtractResult:
    """Extract a (possibly compressed) layer tar from ``raw`` into the existing directory ``dest``.

    Blocking: call it in a thread.

    Args:
        raw: seekable binary file with the tar stream.
        dest: empty directory to fill.

    Returns:
        The diff id (sha256 of the uncompressed tar) and the total size of regular file data.

    Raises:
        InvalidParameter: the archive is malformed or tries to escape ``dest``.
    """
    if not raw.read(1):
        # dockerd accepts an empty stream (``docker import /dev/null``) as an empty layer.
        return ExtractResult("sha256:" + hashlib.sha256(b"").hexdigest(), 0)
    raw.seek(0)
    reader = _HashingReader(open_decompressed(raw))
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    ex = _Extractor(root_fd, dest)
    try:
        for tar, info in iter_members(cast(IO[bytes], reader)):
            ex.member(tar, info)
        reader.drain()
        ex.restore_dir_times()
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise SystemFailure("no space left on device while extracting layer") from exc
        raise InvalidParameter(f"invalid tar archive: {exc}") from exc
    finally:
        os.close(root_fd)
    return ExtractResult("sha256:" + reader.hasher.hexdigest(), ex.size)
