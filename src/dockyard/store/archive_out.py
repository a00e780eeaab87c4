"""Reading a container's files into a tar stream (``docker cp`` out of a container, ``docker export``).

The container's files are untrusted and, for a running container, changing while we read. So the tree is
walked by directory descriptors (each child opened ``O_NOFOLLOW`` relative to its parent, never by a path
string), the requested path is resolved with :mod:`dockyard.store.inroot`, and a file that shrinks or grows
while it is read is padded or cut to the size its header announced, so the archive stays well formed.

Names follow dockerd (``archive.TarResourceRebase``): a directory ``/etc`` comes out as ``etc/``,
``etc/passwd``...; a file or symlink as its base name; the export has no root entry.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

from dockyard.store.inroot import clean_abs, follow_in_scope, open_in_root

__all__ = ["PathStat", "Source", "go_file_mode", "locate", "write_export", "write_source"]

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Go's os.FileMode type bits (the stat header carries Go's encoding, not st_mode's).
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_NAMED_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHAR_DEVICE = 1 << 21
_GO_STICKY = 1 << 20
_GO_TYPE = {
    stat.S_IFDIR: _GO_DIR,
    stat.S_IFLNK: _GO_SYMLINK,
    stat.S_IFBLK: _GO_DEVICE,
    stat.S_IFCHR: _GO_DEVICE | _GO_CHAR_DEVICE,
    stat.S_IFIFO: _GO_NAMED_PIPE,
    stat.S_IFSOCK: _GO_SOCKET,
}


_NODE_TYPES = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE, stat.S_IFIFO: tarfile.FIFOTYPE}


class Sink(Protocol):
    """Where the tar bytes go (called from the archiving thread)."""

    def write(self, data: bytes) -> Any:
        """Take the next bytes of the archive."""
        ...


def go_file_mode(st_mode: int) -> int:
    """``st_mode`` as Go's ``os.FileMode`` (what ``X-Docker-Container-Path-Stat`` reports)."""
    mode = (st_mode & 0o777) | _GO_TYPE.get(stat.S_IFMT(st_mode), 0)
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def go_time(ns: int) -> str:
    """A timestamp as Go's ``time.Time`` marshals it in UTC (RFC 3339, trailing zeros of nanos dropped)."""
    secs, nanos = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{base}{frac}Z"


@dataclass(frozen=True)
class PathStat:
    """``types.ContainerPathStat``: what ``HEAD /containers/{id}/archive`` reports."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def to_wire(self) -> dict[str, Any]:
        """The JSON object, keys and order as dockerd sends them."""
        return {
            "name": self.name,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "linkTarget": self.link_target,
        }


@dataclass
class Source:
    """A located path: the directory holding it (or the directory itself) and how to name it."""

    dir_fd: int
    entry: str | None  # the name inside dir_fd; None when dir_fd is the requested directory itself
    st: os.stat_result
    stat: PathStat

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self.dir_fd)


def _abs_path(path: str) -> str:
    """moby's ``PreserveTrailingDotOrSeparator(Join("/", path), path)``."""
    cleaned = clean_abs(path)
    if posixpath.basename(path) == "." and posixpath.basename(cleaned) != ".":
        cleaned = cleaned.rstrip("/") + "/."
    if path.endswith("/") and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def _go_base(path: str) -> str:
    """Go's ``filepath.Base``: trailing slashes dropped, ``/`` for the root."""
    trimmed = path.rstrip("/")
    return posixpath.basename(trimmed) if trimmed else "/"


def locate(root_fd: int, path: str) -> Source:
    """Find ``path`` as dockerd's ``ResolvePath`` + ``StatPath`` do: every component but the last is
    resolved inside the root; the last is not followed unless the path ends in ``/`` or ``/.``.

    Raises:
        FileNotFoundError: nothing is there (also for a file given with a trailing slash).
    """
    abs_path = _abs_path(path)
    dir_part, base = posixpath.split(abs_path)
    try:
        fd = open_in_root(root_fd, dir_part, os.O_RDONLY | os.O_DIRECTORY)  # followed, inside the root
    except NotADirectoryError as exc:
        raise FileNotFoundError(str(exc)) from exc
    entry = None if base in ("", ".") else base
    try:
        st = os.fstat(fd) if entry is None else os.lstat(entry, dir_fd=fd)
    except BaseException:
        os.close(fd)
        raise
    link = follow_in_scope(root_fd, abs_path) if stat.S_ISLNK(st.st_mode) else ""
    info = PathStat(_go_base(abs_path), st.st_size, go_file_mode(st.st_mode), go_time(st.st_mtime_ns), link)
    return Source(fd, entry, st, info)


def write_source(src: Source, out: Sink) -> None:
    """Write the tar of a located path (blocking: run it in a thread)."""
    name = src.stat.name
    with _open_tar(out) as tar:
        writer = _TreeWriter(tar)
        if not stat.S_ISDIR(src.st.st_mode):
            assert src.entry is not None
            writer.add(src.dir_fd, src.entry, name, src.st)
            return
        prefix = "" if name == "/" else name
        top = os.dup(src.dir_fd) if src.entry is None else os.open(src.entry, _DIR_FLAGS, dir_fd=src.dir_fd)
        try:
            writer.add_dir_entry(prefix + "/", os.fstat(top))
            writer.walk(top, prefix + "/")
        finally:
            os.close(top)


def write_export(root_fd: int, out: Sink) -> None:
    """Write the whole root filesystem as a tar, without a root entry (blocking: run it in a thread)."""
    top = os.dup(root_fd)
    try:
        with _open_tar(out) as tar:
            _TreeWriter(tar).walk(top, "")
    finally:
        os.close(top)


def _open_tar(out: Sink) -> tarfile.TarFile:
    tar = tarfile.open(fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    tar.copybufsize = _CHUNK  # type: ignore[attr-defined]
    return tar


class _TreeWriter:
    """Adds entries to a tar, remembering inodes so that hardlinks stay hardlinks."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.links: dict[tuple[int, int], str] = {}

    def walk(self, top: int, prefix: str) -> None:
        """Every entry under ``top``, depth first, names sorted (iterative: a tree may be very deep)."""
        stack: list[tuple[int, str, list[str]]] = [(os.dup(top), prefix, _names(top))]
        try:
            while stack:
                dir_fd, arc_dir, names = stack[-1]
                if not names:
                    os.close(dir_fd)
                    stack.pop()
                    continue
                name = names.pop()
                try:
                    st = os.lstat(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # removed while we walk
                arc = arc_dir + name
                if not stat.S_ISDIR(st.st_mode):
                    self.add(dir_fd, name, arc, st)
                    continue
                child = _open_child_dir(dir_fd, name, st)
                if child is None:
                    continue
                self.add_dir_entry(arc + "/", os.fstat(child))
                stack.append((child, arc + "/", _names(child)))
        finally:
            for dir_fd, _, _ in stack:
                os.close(dir_fd)

    def add_dir_entry(self, arc: str, st: os.stat_result) -> None:
        """A directory's own header."""
        info = _header(arc, st)
        info.type = tarfile.DIRTYPE
        self.tar.addfile(info)

    def add(self, dir_fd: int, name: str, arc: str, st: os.stat_result) -> None:
        """A non-directory entry ``name`` of ``dir_fd``, stored as ``arc``."""
        info = _header(arc, st)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            self._regular(dir_fd, name, info, st)
        elif kind == stat.S_IFLNK:
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            self.tar.addfile(info)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            info.type = _NODE_TYPES[kind]
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        # sockets cannot be archived; dockerd skips them too

    def _regular(self, dir_fd: int, name: str, info: tarfile.TarInfo, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            info.type = tarfile.LNKTYPE
            info.linkname = self.links[key]
            self.tar.addfile(info)
            return
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return  # replaced while we walk
            _capability(fd, info)
            info.size = st.st_size
            self.tar.addfile(info, cast(IO[bytes], _Exact(fd, st.st_size)))
        finally:
            os.close(fd)
        if st.st_nlink > 1:
            self.links[key] = info.name


def _names(dir_fd: int) -> list[str]:
    """Entry names, reverse-sorted so that ``pop()`` yields them in order."""
    with os.scandir(dir_fd) as entries:
        return sorted((e.name for e in entries), reverse=True)


def _open_child_dir(dir_fd: int, name: str, st: os.stat_result) -> int | None:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None  # replaced (by a symlink, a file) while we walk, or gone
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return fd


def _header(arc: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arc)
    info.mode = st.st_mode & 0o7777
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)  # whole seconds, as dockerd writes them (no PAX time records)
    return info


def _capability(fd: int, info: tarfile.TarInfo) -> None:
    """File capabilities travel as a PAX xattr record, as dockerd writes them."""
    try:
        value = os.getxattr(fd, "security.capability")
    except OSError:
        return
    info.pax_headers = {"SCHILY.xattr.security.capability": value.decode("utf-8", "surrogateescape")}


class _Exact:
    """Exactly ``size`` bytes of a file that may change while read: cut when it grew, zero-padded when it
    shrank (the header is already written)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._left = size

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        try:
            data = os.read(self._fd, want)
        except BlockingIOError:
            data = b""
        if not data:
            data = bytes(want)
        self._left -= len(data)
        return data
