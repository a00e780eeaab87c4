"""Reading a container's k8s-file log: whole, from a time, or its last lines.

``tail`` and ``since`` do not parse the whole file: :func:`find_start` walks back from the end in blocks
until it has seen enough lines, and a forward parse from there does the rest in large blocks. A line
split over several ``P`` records may have its first pieces far back when the other stream was busy
meanwhile; those are found with ``bytes.rfind`` over blocks (C speed), not line by line.

Semantics: the stream filter applies first, then the ``since``/``until`` window (inclusive), then
``tail`` keeps the last N of what is left. (dockerd counts ``tail`` before the window; for ``since`` the
results agree, since times only grow.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import BinaryIO

from dockyard.logs.records import STREAM_IDS, LogFilter, LogRecord, RecordParser, parse_head, rfc3339_to_ns

__all__ = ["LogFilter", "LogRecord", "find_start", "read_logs", "read_logs_async", "read_range"]

BACK_BLOCK = 64 * 1024
FORWARD_BLOCK = 1024 * 1024
_MARKERS = {stream: b" " + name + b" " for name, stream in STREAM_IDS.items()}
_MAX_HEAD = 64


def _reverse_lines(f: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, line)`` for the complete lines before ``end``, last first."""
    pos = end
    carry = b""
    while pos > 0:
        start = max(0, pos - BACK_BLOCK)
        f.seek(start)
        buf = f.read(pos - start) + carry
        pos = start
        parts = buf.split(b"\n")
        off = start + len(buf) - len(parts[-1])
        for line in reversed(parts[1:-1]):
            off -= len(line) + 1
            yield off, line
        carry = parts[0] + b"\n" if len(parts) > 1 else parts[0]
        if pos == 0 and len(parts) > 1:
            yield 0, parts[0]


def _rfind(f: BinaryIO, needle: bytes, end: int) -> int:
    """Return the offset of the last ``needle`` lying wholly before ``end``, or -1."""
    pos = end
    while pos > 0:
        start = max(0, pos - BACK_BLOCK)
        f.seek(start)
        buf = f.read(min(end, pos + len(needle) - 1) - start)
        i = buf.rfind(needle)
        if i >= 0:
            return start + i
        pos = start
    return -1


def _previous_record(f: BinaryIO, stream: int, before: int) -> tuple[bool, int] | None:
    """Find the last record of ``stream`` starting before ``before``: ``(is_full, end_offset)`` or None."""
    marker = _MARKERS[stream]
    end = before
    while (i := _rfind(f, marker, end)) >= 0:
        end = i
        head_start = max(0, i - _MAX_HEAD)
        f.seek(head_start)
        head = f.read(i - head_start)
        nl = head.rfind(b"\n")
        if nl < 0 and head_start > 0:
            continue  # too far from a line start to be a record's timestamp: it is inside content
        ts = head[nl + 1 :]
        if b" " in ts or not ts:
            continue
        f.seek(i + len(marker))
        rest = f.readline()
        if not rest.endswith(b"\n") or rest[:2] not in (b"F ", b"P "):
            continue
        return rest[:1] == b"F", i + len(marker) + len(rest)
    return None


def find_start(f: BinaryIO, end: int, log_filter: LogFilter, tail: int | None, *, dangling: bool) -> int:
    """Find an offset from which a forward parse yields every record ``tail``/``since`` keep.

    Args:
        f: The log file, opened for binary reading.
        end: Where the complete data ends (file size).
        log_filter: Stream and time window.
        tail: Keep the last N lines; None for all.
        dangling: Count an unfinished last line (ending in ``P`` records) as a line.

    Returns:
        A record boundary; parsing from it may produce extra older records, never miss a kept one.
    """
    if tail is None and log_filter.since_ns is None:
        return 0
    if tail is not None and tail <= 0:
        return end
    need = tail if tail is not None else -1
    open_ends: dict[int, int] = {}  # stream -> offset of a kept line's last record
    seen: set[int] = set()
    count = 0
    for off, line in _reverse_lines(f, end):
        head = parse_head(line)
        if head is None or not log_filter.wants(head[0]):
            continue
        stream, full, ts, _ = head
        if full:
            open_ends.pop(stream, None)
        elif stream in seen or not dangling:
            seen.add(stream)
            continue
        seen.add(stream)
        try:
            t = rfc3339_to_ns(ts)
        except ValueError:
            continue
        if log_filter.until_ns is not None and t > log_filter.until_ns:
            continue
        if log_filter.since_ns is not None and t < log_filter.since_ns:
            return _close_open_lines(f, off, open_ends)
        count += 1
        open_ends[stream] = off
        if count == need:
            return _close_open_lines(f, off, open_ends)
    return 0


def _close_open_lines(f: BinaryIO, off: int, open_ends: dict[int, int]) -> int:
    """Walk back from ``off`` until each kept line's first piece is covered; return the safe offset."""
    start = off
    for stream, line_off in open_ends.items():
        pos = line_off
        while True:
            found = _previous_record(f, stream, pos)
            if found is None:  # no earlier record of this stream: the line starts where we are
                start = min(start, pos)
                break
            full, rec_end = found
            if full:
                start = min(start, rec_end)
                break
            pos = _line_start(f, rec_end)
    return start


def _line_start(f: BinaryIO, rec_end: int) -> int:
    """Return the offset of the record that ends (newline included) at ``rec_end``."""
    nl = _rfind(f, b"\n", rec_end - 1)
    return nl + 1


def read_range(f: BinaryIO, parser: RecordParser, start: int, end: int) -> Iterator[list[LogRecord]]:
    """Parse ``[start, end)`` in large blocks, yielding each block's completed records."""
    f.seek(start)
    pos = start
    while pos < end:
        chunk = f.read(min(FORWARD_BLOCK, end - pos))
        if not chunk:
            break
        pos += len(chunk)
        yield parser.feed(chunk)


def read_logs(
    path: str | os.PathLike[str],
    *,
    stdout: bool = True,
    stderr: bool = True,
    since_ns: int | None = None,
    until_ns: int | None = None,
    tail: int | None = None,
) -> list[LogRecord]:
    """Read a k8s-file log once (blocking).

    Args:
        path: The log file; a missing file reads as empty.
        stdout: Keep stdout records.
        stderr: Keep stderr records.
        since_ns: Keep records at or after this Unix time in ns.
        until_ns: Keep records at or before this Unix time in ns.
        tail: Keep only the last N lines that pass the other filters; None for all.

    Returns:
        The records in file order; an unfinished last line is included without a newline.
    """
    log_filter = LogFilter(stdout, stderr, since_ns, until_ns)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, kept open across helpers
    except FileNotFoundError:
        return []
    with f:
        end = os.fstat(f.fileno()).st_size
        start = find_start(f, end, log_filter, tail, dangling=True)
        parser = RecordParser(log_filter)
        out: list[LogRecord] = []
        for records in read_range(f, parser, start, end):
            out.extend(records)
        out.extend(parser.flush())
    if tail is not None:
        return out[-tail:] if tail > 0 else []
    return out


async def read_logs_async(
    path: str | os.PathLike[str],
    *,
    stdout: bool = True,
    stderr: bool = True,
    since_ns: int | None = None,
    until_ns: int | None = None,
    tail: int | None = None,
) -> list[LogRecord]:
    """Run :func:`read_logs` in a worker thread; same arguments and result."""
    return await asyncio.to_thread(
        read_logs, path, stdout=stdout, stderr=stderr, since_ns=since_ns, until_ns=until_ns, tail=tail
    )
