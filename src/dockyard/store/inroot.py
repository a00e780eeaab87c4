"""Paths resolved inside a container's root directory as if the daemon were chrooted there.

``docker cp`` resolves paths the way the container sees them: ``/var/run -> /run`` must work, and a
symlink ``/escape -> /`` planted by the container (or by an earlier member of the same archive) must lead
to the *container's* root, never the host's. ``openat2(2)`` with ``RESOLVE_IN_ROOT`` does exactly that in
the kernel: absolute symlinks and ``..`` are clamped at the root directory descriptor, atomically, so a
running container that swaps a directory for a symlink mid-copy cannot race us out of its root. Magic
links (``/proc/self/root``) are refused, so no path can jump through procfs either.

Every function here takes the root as an open directory descriptor and a container-absolute or relative
path; nothing here ever resolves a container path with the host's view of the filesystem.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import posixpath

from dockyard.errors import SystemFailure

__all__ = ["clean_abs", "follow_in_scope", "make_dirs", "open_in_root"]

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (added in 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_LINKS = 255  # as moby's FollowSymlinkInScope

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def clean_abs(path: str) -> str:
    """Go's ``path.Clean("/" + path)``: absolute, lexical, a single leading slash (POSIX keeps ``//``)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def open_in_root(root_fd: int, path: str, flags: int = os.O_RDONLY | os.O_DIRECTORY, mode: int = 0) -> int:
    """Open ``path`` (container-absolute or relative to the root) resolved inside ``root_fd``.

    Args:
        root_fd: directory descriptor of the container's root.
        path: the path as the container sees it.
        flags: ``os.O_*`` flags (``O_CLOEXEC`` is always added).
        mode: permission bits when creating.

    Returns:
        A new descriptor, owned by the caller.

    Raises:
        OSError: as open(2) would raise it (ENOENT, ENOTDIR, ELOOP, ...).
    """
    rel = path.lstrip("/") or "."
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(
            _SYS_OPENAT2, ctypes.c_int(root_fd), os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        # EAGAIN: a concurrent rename made the kernel give up on a race-free answer; retry as for EINTR.
        if err in (errno.EINTR, errno.EAGAIN):
            continue
        if err == errno.ENOSYS:
            raise SystemFailure("openat2(2) is not available: container archives need Linux 5.6 or newer")
        raise OSError(err, os.strerror(err), path)


def make_dirs(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Open the directory ``path`` inside the root, creating missing components (``mkdir -p``).

    Returns:
        A directory descriptor, owned by the caller.
    """
    try:
        return open_in_root(root_fd, path)
    except FileNotFoundError:
        pass
    # Downwards from the root, creating what is missing (iterative: a hostile archive may nest deeply).
    parts = [p for p in clean_abs(path).split("/") if p]
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        try:
            os.close(open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        parent_fd = open_in_root(root_fd, "/".join(parts[: depth - 1]), os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(parts[depth - 1], mode, dir_fd=parent_fd)
        except FileExistsError:
            pass  # created meanwhile, or a dangling symlink: the next open says which
        finally:
            os.close(parent_fd)
    return open_in_root(root_fd, path)


def follow_in_scope(root_fd: int, path: str) -> str:
    """The container-absolute path ``path`` leads to, every symlink followed inside the root.

    Like moby's ``FollowSymlinkInScope``: components that do not exist are kept as they are, so a dangling
    link still has an answer (the ``linkTarget`` of ``docker cp``'s stat). The result is only ever reported,
    never opened.
    """
    resolved = "/"
    todo = path
    links = 0
    while todo:
        comp, _, todo = todo.lstrip("/").partition("/")
        if comp in ("", "."):
            continue
        if comp == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, comp)
        target = _readlink_in_root(root_fd, resolved, comp)
        if target is None:
            resolved = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many links", path)
        if target.startswith("/"):
            resolved = "/"
        todo = target + "/" + todo
    return resolved


def _readlink_in_root(root_fd: int, parent: str, name: str) -> str | None:
    try:
        parent_fd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.readlink(name, dir_fd=parent_fd)
    except OSError:  # not a symlink, or absent
        return None
    finally:
        os.close(parent_fd)
