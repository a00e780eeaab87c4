"""Wire framing of container output: stdcopy frames (non-TTY) or raw bytes (TTY), and the pumps that
move bytes between a hijacked connection and a container's stdio."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

from dockyard.api import version
from dockyard.api.messages import ClientGone, RawStream, StreamWriter
from dockyard.logs.records import LogRecord
from dockyard.logs.timestamps import docker_timestamp
from dockyard.runtime.base import AttachStream

_HEADER = struct.Struct(">BxxxL")
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame: stream byte, three zero bytes, big-endian length, payload."""
    return _HEADER.pack(stream, len(data)) + data


def content_type(tty: bool, api_version: str) -> str:
    """Multiplexed frames announce themselves from API 1.42 on; raw otherwise."""
    if not tty and version.at_least(api_version, "1.42"):
        return MULTIPLEXED
    return RAW


def encode(tty: bool, stream: int, data: bytes) -> bytes:
    """Bytes for one output chunk."""
    return data if tty else frame(stream, data)


async def write_logs(
    out: StreamWriter, records: AsyncIterator[LogRecord], tty: bool, timestamps: bool, follow: bool
) -> None:
    """Stream log records: each at once when following, else in writes of about 64 KiB.

    A follower of a silent container would otherwise notice its client's departure only at the next write:
    each record is raced against the client going away, so the handler (and its log file and inotify
    descriptors) ends with the connection.
    """
    flush_at = 1 if follow else 65536
    batch: list[bytes] = []
    size = 0
    async with contextlib.aclosing(records) as it:  # type: ignore[type-var]
        while True:
            rec = await _next_record(it, out.gone) if follow else await anext(it, None)
            if rec is None:
                break
            data = rec.data
            if timestamps:
                data = docker_timestamp(rec).encode() + b" " + data
            batch.append(encode(tty, rec.stream, data))
            size += len(batch[-1])
            if size >= flush_at:
                await out.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            await out.write(b"".join(batch))


async def _next_record(it: AsyncIterator[LogRecord], gone: asyncio.Future[None]) -> LogRecord | None:
    """The next record, None at the end; raises ClientGone when the client leaves first."""
    nxt = asyncio.ensure_future(anext(it, None))
    waiters: set[asyncio.Future[Any]] = {nxt, gone}
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if nxt in done:
        return nxt.result()
    nxt.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await nxt
    raise ClientGone()


async def pump_attach(
    raw: RawStream, stdio: AttachStream, tty: bool, with_stdin: bool, stdin_once: bool
) -> None:
    """Copy container output to the client and client input to the container until the output ends."""
    feeder = asyncio.ensure_future(_feed_stdin(raw, stdio, stdin_once)) if with_stdin else None
    try:
        while True:
            chunk = await _next_or_gone(stdio, raw)
            if chunk is None:
                break
            raw.write(encode(tty, chunk[0], chunk[1]))
            await raw.drain()
    except ClientGone:
        pass
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
        stdio.close()
        raw.close()


async def _next_or_gone(stdio: AttachStream, raw: RawStream) -> tuple[int, bytes] | None:
    read = asyncio.ensure_future(stdio.read())
    waiters: list[asyncio.Future[Any]] = [read, raw.closed]
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if read in done:
        return read.result()
    read.cancel()
    raise ClientGone()


async def _feed_stdin(raw: RawStream, stdio: AttachStream, stdin_once: bool) -> None:
    while True:
        data = await raw.reader.read(65536)
        if not data:
            break
        await stdio.write_stdin(data)
    if stdin_once:
        await stdio.close_stdin()
