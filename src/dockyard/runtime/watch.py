"""Exit detection by event: a pidfd of the shim (or of the process) on the event loop.

A pidfd becomes readable when its process exits, also for processes that are not our children
(conmon daemonizes, and after a daemon restart nothing is our child any more), so there is no
polling and no sleep. conmon writes the exit file before it exits, so the file is there when the
pidfd fires.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from dockyard.runtime.base import ExitStatus
from dockyard.runtime.conmon import EXIT_FILE, OOM_FILE

# Docker reports 255 when the daemon cannot know how a container ended.
UNKNOWN_EXIT_CODE = 255


def open_pidfd(pid: int, expect_in_cmdline: tuple[str, ...] = ()) -> int | None:
    """A pidfd for ``pid``, or None when it is gone or (after pid reuse) is another program.

    The pidfd is opened before reading the command line, so the process checked is the one the
    descriptor refers to.
    """
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        os.close(fd)
        return None
    words = [w.decode(errors="replace") for w in cmdline]
    if all(any(token in w for w in words) for token in expect_in_cmdline):
        return fd
    os.close(fd)
    return None


def read_exit(bundle: Path, exit_file: Path | None = None) -> ExitStatus | None:
    """The exit status conmon recorded in ``bundle`` (or ``exit_file``), None if none was written."""
    for path in (bundle / EXIT_FILE, exit_file):
        if path is None:
            continue
        try:
            text = path.read_text().strip()
            finished = path.stat().st_mtime
        except OSError:
            continue
        try:
            code = int(text)
        except ValueError:
            code = UNKNOWN_EXIT_CODE
        return ExitStatus(exit_code=code, finished_at=finished, oom_killed=(bundle / OOM_FILE).exists())
    return None


class ExitWatch:
    """One container's pending exit: resolves once the watched process is gone."""

    def __init__(self, bundle: Path, exit_file: Path, pidfd: int | None) -> None:
        """Watch ``pidfd`` (None: the process is already gone) and read the exit from ``bundle``."""
        self._loop = asyncio.get_running_loop()
        self._bundle = bundle
        self._exit_file = exit_file
        self._pidfd = pidfd
        self.future: asyncio.Future[ExitStatus] = self._loop.create_future()
        if pidfd is None:
            self._finish()
        else:
            self._loop.add_reader(pidfd, self._finish)

    def _finish(self) -> None:
        self._release()
        if not self.future.done():
            status = read_exit(self._bundle, self._exit_file)
            self.future.set_result(status or ExitStatus(UNKNOWN_EXIT_CODE, time.time()))

    def _release(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def cancel(self) -> None:
        """Stop watching (the container is being deleted); waiters get what is known by now."""
        self._finish()
