"""Writing one tar member, shared by the layer extractor and ``docker cp``'s extractor.

The two extractors differ in how they *find* a member's parent directory (:mod:`dockyard.store.tarsafe`
refuses symlinks along a path; :mod:`dockyard.store.archive_in` follows them inside the container root),
but once the parent is an open descriptor, writing a file's data and applying owner, mode, extended
attributes and times is the same work; it lives here. Everything is relative to a descriptor, never a path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import IO

__all__ = [
    "IS_ROOT",
    "apply_fd_meta",
    "apply_link_meta",
    "create_entry",
    "iter_members",
    "make_node",
    "remove_entry",
    "write_file",
]

_CHUNK = 1 << 20
IS_ROOT = os.geteuid() == 0


def iter_members(stream: IO[bytes]) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Parse the tar ``stream`` header by header, in bounded memory.

    Yields:
        The open archive (to read a member's data from) and each member in turn.
    """
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        while (info := tar.next()) is not None:
            yield tar, info
            # Why: tarfile keeps every header; dropping them bounds memory for many-file archives.
            tar.members = []  # type: ignore[attr-defined]


def create_entry(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    parent: int,
    base: str,
    owner: tuple[int, int],
    on_chunk: Callable[[int], None] | None = None,
) -> bool:
    """Create the file, symlink, fifo or device ``base`` in ``parent`` (nothing may be in its way).

    Directories and hardlinks are the caller's: each extractor finds an existing directory or a link's
    source its own way.

    Args:
        tar: the archive the member's data is read from.
        info: the member.
        parent: descriptor of the directory to create the entry in.
        base: the entry's name.
        owner: uid and gid to give the entry (applied only when running as root).
        on_chunk: called with the size of every chunk of file data written (disk accounting).

    Returns:
        False for a member type this does not create (the caller refuses it with its own text).
    """
    if info.isreg():
        write_file(tar, info, parent, base, owner, on_chunk)
    elif info.issym():
        os.symlink(info.linkname, base, dir_fd=parent)
        apply_link_meta(info, parent, base, owner)
    elif info.ischr() or info.isblk() or info.isfifo():
        make_node(info, parent, base, owner)
    else:
        return False
    return True


def write_file(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    parent: int,
    base: str,
    owner: tuple[int, int],
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Create the regular file ``base`` in ``parent`` (it must not exist) with the member's data and metadata.

    Args:
        tar: the archive the member's data is read from.
        info: the member.
        parent: descriptor of the directory to create the file in.
        base: the file's name.
        owner: uid and gid to give the file (applied only when running as root).
        on_chunk: called with the size of every chunk written (disk accounting).
    """
    src = tar.extractfile(info)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(base, flags, 0o600, dir_fd=parent)
    try:
        while src is not None and (chunk := src.read(_CHUNK)):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            if on_chunk is not None:
                on_chunk(len(chunk))
        apply_fd_meta(fd, info, owner)
        os.utime(fd, (info.mtime, info.mtime))
    finally:
        os.close(fd)


def apply_fd_meta(fd: int, info: tarfile.TarInfo, owner: tuple[int, int]) -> None:
    """Owner (as root), then mode (a chown clears set-id bits), then extended attributes, on the open file."""
    if IS_ROOT:
        os.fchown(fd, *owner)
    os.fchmod(fd, info.mode & 0o7777)
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            # Namespaces this filesystem refuses are skipped, as dockerd does.
            with contextlib.suppress(OSError):
                os.setxattr(fd, key.removeprefix("SCHILY.xattr."), value.encode("utf-8", "surrogateescape"))


def apply_link_meta(info: tarfile.TarInfo, parent: int, base: str, owner: tuple[int, int]) -> None:
    """Owner (as root) and times of ``base`` in ``parent``, never following it (it may be a symlink)."""
    if IS_ROOT:
        os.chown(base, *owner, dir_fd=parent, follow_symlinks=False)
    os.utime(base, (info.mtime, info.mtime), dir_fd=parent, follow_symlinks=False)


def make_node(info: tarfile.TarInfo, parent: int, base: str, owner: tuple[int, int]) -> None:
    """Create the fifo or device ``base`` in ``parent`` (devices only as root; otherwise skipped).

    It is made private first, then owner, mode and times are applied through a descriptor of the node
    itself, so a node swapped for a symlink meanwhile is never followed (it is left alone).
    """
    if info.isfifo():
        kind = stat.S_IFIFO
    elif not IS_ROOT:
        return
    else:
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
    os.mknod(base, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=parent)
    fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
            return  # swapped meanwhile: leave it alone
        by_fd = f"/proc/self/fd/{fd}"  # an O_PATH descriptor takes no fchown/fchmod; its proc link does
        if IS_ROOT:
            os.chown(by_fd, *owner)
        os.chmod(by_fd, info.mode & 0o7777)
        os.utime(by_fd, (info.mtime, info.mtime))
    finally:
        os.close(fd)


def remove_entry(parent: int, name: str, is_dir: bool) -> None:
    """Delete what is in the way (descriptor-relative: rmtree with ``dir_fd`` never follows symlinks)."""
    if is_dir:
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)
