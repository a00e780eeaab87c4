"""Blocking tar work in a thread, talking to the event loop: bytes out to a client, request bytes in.

Why a thread of its own per job and not ``asyncio.to_thread``: a client that reads an export slowly keeps
its job blocked for as long as it likes, and the shared default executor (a handful of threads on a small
machine) must stay free for the rest of the daemon. The thread is a daemon thread, so a job stuck on a
silent client never holds up the daemon's exit.

The job's descriptors belong to the coroutine that started it; when that coroutine is cancelled, the job
is told to stop and is *waited for* before the cancellation goes on, so no descriptor is closed (and its
number reused) while the thread may still use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BodyReader", "ChunkSink", "JobCancelled", "LoopBridge"]

_T = TypeVar("_T")
_SINK_CHUNK = 256 << 10


class JobCancelled(Exception):
    """The coroutine waiting for the job went away; the thread unwinds with this."""


class LoopBridge:
    """Runs one blocking function in its own thread and lets it call coroutines on the loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancelled = threading.Event()
        self._current: concurrent.futures.Future[Any] | None = None

    async def run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in a new thread and return its result (or raise its exception)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        done: asyncio.Future[_T] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not done.done():
                outcome()

        def target() -> None:
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
                loop.call_soon_threadsafe(settle, lambda: done.set_exception(error))
            else:
                loop.call_soon_threadsafe(settle, lambda: done.set_result(result))

        threading.Thread(target=target, name="dockyard-archive", daemon=True).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self.cancel()
            with contextlib.suppress(BaseException):
                await done  # the thread must be finished with our descriptors before they close
            raise

    def cancel(self) -> None:
        """Make the thread's next (or current) loop call fail with :class:`JobCancelled`."""
        self._cancelled.set()
        current = self._current
        if current is not None:
            current.cancel()

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """From the job's thread: run ``coro`` on the loop and wait for its result."""
        if self._cancelled.is_set() or self._loop is None:
            coro.close()
            raise JobCancelled()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._current = future
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise JobCancelled() from None
        finally:
            self._current = None


class ChunkSink:
    """A write-only file for the job's thread: gathers bytes into chunks and sends each with ``write``
    (which applies the connection's back-pressure and raises when the client left)."""

    def __init__(self, bridge: LoopBridge, write: Callable[[bytes], Awaitable[None]]) -> None:
        self._bridge = bridge
        self._write = write
        self._buf = bytearray()
        self._failed: BaseException | None = None

    def write(self, data: bytes) -> int:
        """Buffer ``data``; send a chunk when enough is gathered."""
        if self._failed is not None:
            raise self._failed  # the client is gone: every later write fails the same way
        self._buf += data
        if len(self._buf) >= _SINK_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """Send what is buffered."""
        if not self._buf or self._failed is not None:
            return
        chunk, self._buf = bytes(self._buf), bytearray()
        try:
            self._bridge.call(_send(self._write, chunk))
        except BaseException as exc:
            self._failed = exc
            raise


async def _send(write: Callable[[bytes], Awaitable[None]], chunk: bytes) -> None:
    await write(chunk)


class BodyReader:
    """A read-only file for the job's thread over the request body's chunks.

    ``seek(0)`` works while nothing past the first chunk has been read: the decompression sniffer reads
    the magic bytes and rewinds.
    """

    def __init__(self, bridge: LoopBridge, chunks: AsyncIterator[bytes]) -> None:
        self._bridge = bridge
        self._chunks = chunks
        self._head: bytes | None = None  # the first chunk, kept for a rewind
        self._buf = b""
        self._off = 0  # an offset, not slicing: tarfile reads 10 KiB at a time from 1 MiB chunks
        self._eof = False
        self._rewindable = True

    def _next_chunk(self) -> bytes:
        if self._eof:
            return b""
        try:
            chunk = self._bridge.call(_next(self._chunks))
        except StopAsyncIteration:
            chunk = b""
        self._eof = not chunk
        return chunk

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left for ``n < 0``); ``b""`` at the end."""
        if self._head is None:
            self._head = self._buf = self._next_chunk()
        if self._off >= len(self._buf):
            self._rewindable = False
            self._buf, self._off = self._next_chunk(), 0
        if n < 0:
            out = self._buf[self._off :] + b"".join(iter(self._next_chunk, b""))
            self._buf, self._off = b"", 0
            return out
        out = self._buf[self._off : self._off + n]
        self._off += len(out)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        """Only a rewind to the start, and only while inside the first chunk."""
        if offset != 0 or whence != 0 or not self._rewindable or self._head is None:
            raise OSError("the request body cannot be rewound")
        self._buf, self._off = self._head, 0
        return 0


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    return await chunks.__anext__()
