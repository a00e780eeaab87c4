"""Following a container's log as conmon writes it (``docker logs -f``).

Woken by inotify, never by a sleep loop: a watch on the file (writes, truncation) and one on its directory
(conmon's ``--log-size-max`` rotation writes ``<log>.tmp`` and renames it over the log, so the followed
inode is replaced). Each wake-up re-checks size and identity, so the follower reads the old file to its end,
then continues at the start of the new one; a file shrunk in place is read again from its start.

File reads run in worker threads, one bounded block at a time, so neither a large backlog nor a slow disk
stalls the event loop, and memory stays bounded however much the consumer has to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Callable
from typing import BinaryIO, Protocol, TypeVar

from dockyard.logs.inotify import IN_CREATE, IN_MODIFY, IN_MOVED_TO, Inotify
from dockyard.logs.reader import FORWARD_BLOCK, find_start, read_range
from dockyard.logs.records import LogFilter, LogRecord, RecordParser

__all__ = ["StopSignal", "follow_logs"]

_T = TypeVar("_T")


class StopSignal(Protocol):
    """Set when the container is no longer running (``asyncio.Event`` fits)."""

    def is_set(self) -> bool:
        """Tell whether the container has stopped."""
        ...

    async def wait(self) -> object:
        """Return once the container has stopped."""
        ...


class _Source:
    """The followed file: descriptor, identity, read offset. Its methods block; run them in a thread."""

    def __init__(self, path: str, parser: RecordParser, inotify: Inotify) -> None:
        self.path = path
        self.parser = parser
        self.inotify = inotify
        self.file: BinaryIO | None = None
        self.ident: tuple[int, int] | None = None
        self.wd: int | None = None
        self.offset = 0

    def open(self) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - lives as long as the follower
        except FileNotFoundError:
            return False
        st = os.fstat(f.fileno())
        self.file, self.ident, self.offset = f, (st.st_dev, st.st_ino), 0
        if self.wd is not None:
            self.inotify.rm_watch(self.wd)
        # A replacement between open and here is caught by the directory watch on the next pump.
        try:
            self.wd = self.inotify.add_watch(self.path, IN_MODIFY)
        except FileNotFoundError:
            self.wd = None
        return True

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def start(self, tail: int | None, log_filter: LogFilter) -> list[LogRecord]:
        """Open the file and position after the backlog's start; return the tail records if asked."""
        if not self.open():
            return []
        assert self.file is not None
        end = os.fstat(self.file.fileno()).st_size
        start = find_start(self.file, end, log_filter, tail, dangling=False)
        if tail is None:
            self.offset = start
            return []
        records: list[LogRecord] = []
        for batch in read_range(self.file, self.parser, start, end):
            records.extend(batch)
        self.offset = end
        return records[-tail:] if tail > 0 else []

    def pump(self) -> tuple[list[LogRecord], bool]:
        """Read the next block; return its records and whether more may be waiting."""
        if self.file is None and not self.open():
            return [], False
        assert self.file is not None
        fd = self.file.fileno()
        size = os.fstat(fd).st_size
        if size < self.offset:  # truncated in place: what is there now is new output
            self.parser.reset()
            self.offset = 0
        if self.offset < size:
            chunk = os.pread(fd, min(FORWARD_BLOCK, size - self.offset), self.offset)
            self.offset += len(chunk)
            return self.parser.feed(chunk), bool(chunk)
        if self._replaced():
            self.close()
            self.parser.drop_rest()
            self.open()
            return [], True
        return [], False

    def _replaced(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) != self.ident


async def _in_thread(func: Callable[[], _T]) -> _T:
    """Run ``func`` in a thread; if cancelled, let it finish first so the caller may close its files."""
    task = asyncio.ensure_future(asyncio.to_thread(func))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


async def follow_logs(
    path: str | os.PathLike[str],
    *,
    stdout: bool = True,
    stderr: bool = True,
    since_ns: int | None = None,
    until_ns: int | None = None,
    tail: int | None = None,
    stopped: StopSignal,
) -> AsyncGenerator[LogRecord, None]:
    """Yield a log's existing records, then new ones as they are written.

    Ends once ``stopped`` is set and everything written before is delivered (an unfinished last line is
    delivered without its newline), or when a record later than ``until_ns`` appears or that time passes.
    Pass an already-set signal to stream a stopped container's log without holding it in memory. Closing
    the iterator (``aclose()``, or cancelling its consumer) releases the inotify and file descriptors.

    Args:
        path: The k8s-file log; it may not exist yet.
        stdout: Deliver stdout records.
        stderr: Deliver stderr records.
        since_ns: Skip records before this Unix time in ns.
        until_ns: Stop at records after this Unix time in ns, or when the clock passes it.
        tail: Start with only the last N existing lines; None for all.
        stopped: Set when the container is no longer running.

    Yields:
        Records in file order.
    """
    log_filter = LogFilter(stdout, stderr, since_ns, until_ns)
    parser = RecordParser(log_filter)
    inotify = Inotify()
    source = _Source(os.fspath(path), parser, inotify)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    stop_task: asyncio.Future[object] | None = None
    timer: asyncio.TimerHandle | None = None
    try:
        inotify.add_watch(os.path.dirname(os.path.abspath(source.path)), IN_CREATE | IN_MOVED_TO)
        loop.add_reader(inotify.fd, _on_event, inotify, wake)
        for record in await _in_thread(lambda: source.start(tail, log_filter)):
            yield record
        stop_task = asyncio.ensure_future(stopped.wait())
        stop_task.add_done_callback(lambda _: wake.set())
        if until_ns is not None:
            timer = loop.call_later(max(0.0, (until_ns - time.time_ns()) / 1e9), wake.set)
        async with contextlib.aclosing(_stream(source, stopped, until_ns, wake)) as records:
            async for record in records:
                yield record
    finally:
        loop.remove_reader(inotify.fd)
        inotify.close()
        source.close()
        if stop_task is not None:
            stop_task.cancel()
        if timer is not None:
            timer.cancel()


def _on_event(inotify: Inotify, wake: asyncio.Event) -> None:
    inotify.drain()
    wake.set()


async def _stream(
    source: _Source, stopped: StopSignal, until_ns: int | None, wake: asyncio.Event
) -> AsyncGenerator[LogRecord, None]:
    """Deliver records as the file grows until the container stops or ``until`` passes."""
    finishing = False
    while True:
        wake.clear()
        records, more = await _in_thread(source.pump)
        for record in records:
            yield record
        if source.parser.past_until:
            return
        if more:
            continue
        if finishing:
            for record in source.parser.flush():
                yield record
            return
        if stopped.is_set() or (until_ns is not None and time.time_ns() >= until_ns):
            finishing = True  # one more pass: output written before the signal is still owed
            continue
        await wake.wait()
