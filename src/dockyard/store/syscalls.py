"""mount(2) and umount2(2) through ctypes.

Why not the ``mount``/``umount`` programs: each exec costs 5-10 ms on a container's start and exit path,
the system calls take microseconds. Overlay options name lower layers relative to the data root (short
names keep the option string under the kernel's page-size limit), so the mount runs with the data root as
working directory: the change is synchronous, on the event loop thread, and no code in dockyard uses
relative paths, so no worker thread can be misled by it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from dockyard.errors import SystemFailure

MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


@contextlib.contextmanager
def _cwd(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def mount_overlay(target: Path, options: str, cwd: Path | None = None) -> None:
    """Mount an overlay filesystem on ``target`` (options may name lower dirs relative to ``cwd``)."""
    with _cwd(cwd):
        rc = _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise SystemFailure(f"mount overlay on {target} failed: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detach ``target``; a target that is not mounted (any more) is fine."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            return
        raise SystemFailure(f"unmount {target} failed: {os.strerror(err)}")
