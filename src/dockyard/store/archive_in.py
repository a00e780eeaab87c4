"""Extracting an untrusted tar into a container's filesystem (``PUT /containers/{id}/archive``).

dockerd extracts in a chroot at the container's root; we get the same semantics without a chroot: every
member's parent directory is opened with ``openat2(RESOLVE_IN_ROOT)`` (:mod:`dockyard.store.inroot`), so
symlinks along the way (the container's own, or ones the archive created) resolve inside the container,
and the member itself is created relative to that descriptor without ever following its last component.
Metadata is applied through the new file's own descriptor, or with ``AT_SYMLINK_NOFOLLOW`` on the fixed
parent, never by a path a running container could swap for a symlink. Member names are checked as
dockerd checks them (``..`` out of the destination, hardlinks out of it, relative symlinks out of it) and
refused with dockerd's texts.

The layer extractor (:mod:`dockyard.store.tarsafe`) has different rules (it refuses symlinks along a
path, where ``docker cp`` follows them inside the container), so only its decompression sniffing and the
writing of a member once its parent is open (:mod:`dockyard.store.tarmember`) are shared. Memory stays
flat: tarfile parses headers as a stream and data is copied in chunks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import lzma
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from dockyard.errors import InvalidParameter, SystemFailure
from dockyard.store.inroot import clean_abs, make_dirs, open_in_root
from dockyard.store.tarmember import apply_fd_meta, create_entry, iter_members, remove_entry
from dockyard.store.tarsafe import open_decompressed

__all__ = ["ExtractOptions", "extract_archive"]

_ENOENT = "no such file or directory"
_PREFIX = "Error processing tar file(exit status 1): "  # dockerd's wording (its untar runs re-exec'd)


@dataclass(frozen=True)
class ExtractOptions:
    """``noOverwriteDirNonDir`` and the owner forced by ``copyUIDGID`` (None: the archive's owners)."""

    no_overwrite_dir_non_dir: bool = False
    chown: tuple[int, int] | None = None


def _q(text: str) -> str:
    """Go's ``%q`` for the paths in error texts."""
    return json.dumps(text, ensure_ascii=False)


def _refuse(text: str) -> InvalidParameter:
    return InvalidParameter(_PREFIX + text)


def extract_archive(raw: BinaryIO, root_fd: int, dest: str, opts: ExtractOptions) -> None:
    """Extract the (possibly compressed) tar ``raw`` into the directory ``dest`` of the root ``root_fd``.

    Blocking: run it in a thread.

    Args:
        raw: the archive; ``read`` and ``seek(0)`` right after the first read (compression sniffing).
        root_fd: the container's root directory.
        dest: the destination, container-absolute and already resolved (no symlinks).
        opts: overwrite rule and forced owner.

    Raises:
        InvalidParameter: a malformed archive or a member that would leave ``dest``, with dockerd's text.
        SystemFailure: the disk is full, or the filesystem refused an operation.
    """
    ex = _Extractor(root_fd, dest, opts)
    try:
        for tar, info in iter_members(open_decompressed(raw)):
            ex.member(tar, info)
        ex.restore_dir_times()
    except (tarfile.TarError, EOFError, lzma.LZMAError) as exc:
        raise _refuse(str(exc) or "unexpected EOF") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise SystemFailure("no space left on device") from exc
        raise SystemFailure(_PREFIX + str(exc)) from exc


class _Extractor:
    def __init__(self, root_fd: int, dest: str, opts: ExtractOptions) -> None:
        self.root_fd = root_fd
        self.dest = clean_abs(dest)
        self.opts = opts
        self.dir_times: list[tuple[str, int]] = []

    def member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = posixpath.normpath(info.name) if info.name else "."
        path = clean_abs(f"{self.dest}/{name}")
        rel = posixpath.relpath(path, self.dest)
        if rel == ".." or rel.startswith("../"):
            raise _refuse(f"{_q(name)} is outside of {_q(self.dest)}")
        if name == "." and info.isdir():
            return  # dockerd leaves the destination's own metadata alone
        parent_path, base = posixpath.split(path)
        if not base:  # a non-directory member standing for "/" itself
            raise _refuse(f"cannot overwrite directory {_q(path)} with non-directory {_q(self.dest)}")
        parent = make_dirs(self.root_fd, parent_path)
        try:
            self._place(tar, info, parent, path, base)
        finally:
            os.close(parent)

    def _place(self, tar: tarfile.TarFile, info: tarfile.TarInfo, parent: int, path: str, base: str) -> None:
        try:
            existing: os.stat_result | None = os.lstat(base, dir_fd=parent)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            was_dir = stat.S_ISDIR(existing.st_mode)
            if self.opts.no_overwrite_dir_non_dir and was_dir and not info.isdir():
                raise _refuse(f"cannot overwrite directory {_q(path)} with non-directory {_q(self.dest)}")
            if self.opts.no_overwrite_dir_non_dir and not was_dir and info.isdir():
                raise _refuse(f"cannot overwrite non-directory {_q(path)} with directory {_q(self.dest)}")
            if not (was_dir and info.isdir()):
                remove_entry(parent, base, was_dir)
        if info.isdir():
            self._dir(info, parent, path, base)
            return
        if info.islnk():
            self._hardlink(info, parent, base)
            return
        if info.issym():
            self._check_symlink(info, path)
        if not create_entry(tar, info, parent, base, self._owner(info)):
            raise _refuse(f"unhandled tar header type {info.type.decode(errors='replace')!r}")

    def _dir(self, info: tarfile.TarInfo, parent: int, path: str, base: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            apply_fd_meta(fd, info, self._owner(info))
        finally:
            os.close(fd)
        self.dir_times.append((path, int(info.mtime)))

    def _check_symlink(self, info: tarfile.TarInfo, path: str) -> None:
        # dockerd's rule (a string prefix, as in Go): a relative target must stay under the destination.
        target = clean_abs(f"{posixpath.dirname(path)}/{info.linkname}")  # Go's Join: no reset at "/"
        if not target.startswith(self.dest):
            raise _refuse(f"invalid symlink {_q(path)} -> {_q(info.linkname)}")

    def _hardlink(self, info: tarfile.TarInfo, parent: int, base: str) -> None:
        target = clean_abs(f"{self.dest}/{info.linkname}")
        if not target.startswith(self.dest):
            raise _refuse(f"invalid hardlink {_q(target)} -> {_q(info.linkname)}")
        src_dir_path, src_name = posixpath.split(target)
        missing = f"link {target} {posixpath.join(self.dest, base)}: {_ENOENT}"
        try:
            src_dir = open_in_root(self.root_fd, src_dir_path, os.O_PATH | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise _refuse(missing) from exc
        try:
            # linkat without AT_SYMLINK_FOLLOW: a symlink source is linked as the symlink itself
            os.link(src_name, base, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise _refuse(missing) from exc
        finally:
            os.close(src_dir)

    def _owner(self, info: tarfile.TarInfo) -> tuple[int, int]:
        return self.opts.chown if self.opts.chown is not None else (info.uid, info.gid)

    def restore_dir_times(self) -> None:
        """Directory times last: creating their entries changed them."""
        for path, mtime in reversed(self.dir_times):
            try:
                fd = open_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue  # replaced by a later member
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
