"""A minimal inotify handle through ctypes, for waking log followers by event instead of polling.

The standard library has no inotify binding and the PyPI ones are either unmaintained or thread based;
three libc calls are all we need. Followers never parse events: any event means "look again", and the
follower re-checks the file's size and identity itself, so a lost or coalesced event cannot fool it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.inotify_rm_watch.restype = ctypes.c_int


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class Inotify:
    """An inotify file descriptor (non-blocking, close-on-exec) and its watches."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch ``path`` for the events in ``mask``; return the watch descriptor."""
        return _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask), "inotify_add_watch")

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; a watch the kernel already dropped (file gone) is fine."""
        if _libc.inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, "inotify_rm_watch")

    def drain(self) -> bool:
        """Read and discard all queued events; return whether there were any."""
        got = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return got
            if not data:
                return got
            got = True

    def close(self) -> None:
        """Close the descriptor (drops all watches); safe to call twice."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
