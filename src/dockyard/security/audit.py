"""Append-only, hash-chained audit log: one JSON line per API call, written off the event loop.

Each line carries ``prev``, the SHA-256 (hex) of the previous line's bytes (without its newline); the first
line of the first file chains from :data:`GENESIS`. Rotation (by size) renames the file to ``PATH.000001``,
``PATH.000002``, ... (oldest first) and the chain simply continues in the new file, so :func:`verify` checks
the rotated files and the live one as one sequence. A chain shows edits, deletions and reordering; it cannot
show that the newest lines were cut off, so operators who need that keep the head hash elsewhere
(``dockyard audit verify`` prints it).

Lines are chained and written on the event loop: the lines of one loop iteration go out in a single
``write(2)`` to the page cache, a few microseconds. A writer thread was measured first and cost more than
that in GIL hand-offs on every request. A caller that must not proceed unaudited (a mutating call) asks
for a durable record and awaits its write; when writing fails, :attr:`AuditLog.failure` says why and the
caller refuses. Unwritten bytes are kept and retried every second, so a transient failure (disk full, then
freed) leaves the chain intact. Standard library only: a hash chain needs no dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("dockyard.audit")

GENESIS = "0" * 64
RETRY_INTERVAL = 1.0  # seconds between attempts to write out lines kept after a failed write
_ROTATED = re.compile(r"\.(\d{6})$")


def line_hash(line: bytes) -> str:
    """The chain hash of one line (without its trailing newline)."""
    return hashlib.sha256(line).hexdigest()


def log_files(path: Path) -> list[Path]:
    """The rotated files of ``path`` (oldest first) followed by ``path`` itself when it exists."""
    rotated = sorted(p for p in path.parent.glob(path.name + ".*") if _ROTATED.search(p.name))
    return [*rotated, *([path] if path.exists() else [])]


def _rotation_index(p: Path) -> int | None:
    m = _ROTATED.search(p.name)
    return int(m.group(1)) if m else None


class AuditLog:
    """The daemon's audit log. Create, :meth:`open` (blocking: call in a thread), record, :meth:`close`."""

    def __init__(self, path: Path, max_bytes: int = 64 << 20, max_pending: int = 16 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.failure: str | None = None  # set while the log cannot be written
        self.dropped = 0
        self._head = GENESIS
        self._lines: list[bytes] = []
        self._futures: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._size = 0
        self._pending = b""  # bytes chained but not yet on disk (kept and retried after a failed write)
        self._mid_line = False  # a partial write left the file ending inside a line

    # -- lifecycle ------------------------------------------------------------------------------------
    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Find the chain's head and open the file for appending."""
        self._loop = loop
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._head = _chain_head(self.path)
        self._open_fd()

    def close(self) -> None:
        """Write what is buffered and close the file."""
        self._hand_over()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- event loop side ------------------------------------------------------------------------------
    def record(self, entry: dict[str, Any], *, durable: bool = False) -> asyncio.Future[None] | None:
        """Chain and queue one entry; with ``durable``, return a future done when it is on disk.

        Args:
            entry: the JSON object to log (``prev`` is added).
            durable: the caller will wait for the write (it fails with OSError when the write fails).

        Returns:
            The future for a durable record, else None.
        """
        return self.record_json(json.dumps(entry, separators=(",", ":"), default=str)[:-1], durable=durable)

    def record_json(self, body: str, *, durable: bool = False) -> asyncio.Future[None] | None:
        """As :meth:`record`, for an entry already serialized: a JSON object's text without its closing
        brace (the hot path builds it from cached fragments instead of a dict)."""
        if not durable and self.failure is not None and len(self._pending) > self.max_pending:
            self.dropped += 1  # dropped before chaining: the chain stays intact, the next line says so
            return None
        if self.dropped:
            body += f',"dropped_before":{self.dropped}'
            self.dropped = 0
        line = f'{body},"prev":"{self._head}"}}'.encode()
        self._head = line_hash(line)
        self._lines.append(line)
        fut: asyncio.Future[None] | None = None
        if durable:
            assert self._loop is not None
            fut = self._loop.create_future()
            self._futures.append(fut)
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._hand_over)
        return fut

    def _hand_over(self) -> None:
        """Write the lines recorded during this event-loop iteration, in one system call."""
        self._scheduled = False
        if not self._lines:
            return
        self._pending += b"\n".join(self._lines) + b"\n"
        futures, self._lines, self._futures = self._futures, [], []
        self._write(futures)

    def _retry_write(self) -> None:
        self._retry = None
        self._write([])

    def _write(self, futures: list[asyncio.Future[None]]) -> None:
        error: OSError | None = None
        try:
            self._maybe_rotate()
            while self._pending:
                n = os.write(self._fd, self._pending)
                self._pending = self._pending[n:]
                self._size += n
                self._mid_line = bool(self._pending)
        except OSError as exc:
            error = exc
        if error is None and self.failure is not None:
            log.warning("audit log %s is writable again", self.path)
        elif error is not None and self.failure is None:
            log.error("audit log %s cannot be written: %s; refusing mutating calls", self.path, error)
        self.failure = None if error is None else f"{self.path}: {error.strerror or error}"
        if self._pending and self._retry is None and self._loop is not None and not self._loop.is_closed():
            # retry after a failure even when no new calls arrive
            self._retry = self._loop.call_later(RETRY_INTERVAL, self._retry_write)
        if futures:
            _settle(futures, error)

    def _maybe_rotate(self) -> None:
        if self._mid_line or self._size == 0 or self._size + len(self._pending) <= self.max_bytes:
            return
        indexes = [i for p in log_files(self.path) if (i := _rotation_index(p)) is not None]
        target = self.path.with_name(f"{self.path.name}.{max(indexes, default=0) + 1:06d}")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.rename(self.path, target)
        self._open_fd()

    def _open_fd(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size


def _settle(futures: list[asyncio.Future[None]], error: OSError | None) -> None:
    for fut in futures:
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(OSError(error.errno, error.strerror))


def _chain_head(path: Path) -> str:
    """Hash of the newest complete line across the files; a torn last line (crash mid-write) is cut off."""
    for p in reversed(log_files(path)):
        last = _last_line(p, truncate_torn=p == path)
        if last is not None:
            return line_hash(last)
    return GENESIS


def _last_line(p: Path, truncate_torn: bool) -> bytes | None:
    with open(p, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return None
        block = min(size, 1 << 20)
        fh.seek(size - block)
        tail = fh.read(block)
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            if truncate_torn:
                log.warning("audit log %s ends in a torn line; cutting it off", p)
                fh.truncate(size - block + cut)
            tail = tail[:cut]
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        return lines[-1] if lines[-1] else None


# -- reading ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`."""

    ok: bool
    lines: int
    head: str
    problem: str = ""


def verify(path: Path) -> VerifyResult:
    """Check the hash chain over the rotated files and ``path``; name the first bad line.

    Args:
        path: the live log file (rotated siblings are found next to it).

    Returns:
        The result; ``problem`` names ``file:line`` and what is wrong.
    """
    files = log_files(path)
    if not files:
        return VerifyResult(False, 0, GENESIS, f"{path}: no audit log found")
    first_index = _rotation_index(files[0])
    anchored = first_index is not None and first_index > 1  # older files were pruned: trust the first prev
    expected: str | None = None if anchored else GENESIS
    count = 0
    for p in files:
        for lineno, raw in _numbered_lines(p):
            count += 1
            where = f"{p}:{lineno}"
            if not raw.endswith(b"\n"):
                return VerifyResult(False, count, expected or GENESIS, f"{where}: incomplete line")
            line = raw[:-1]
            try:
                prev = json.loads(line)["prev"]
            except (ValueError, KeyError, TypeError):
                return VerifyResult(False, count, expected or GENESIS, f"{where}: not an audit record")
            if expected is not None and prev != expected:
                return VerifyResult(
                    False, count, expected,
                    f"{where}: chain broken (this line or the one before it was edited, or lines were "
                    "deleted or reordered here)",
                )  # fmt: skip
            expected = line_hash(line)
    return VerifyResult(True, count, expected or GENESIS)


def _numbered_lines(p: Path) -> Iterator[tuple[int, bytes]]:
    with open(p, "rb") as fh:
        yield from enumerate(fh, start=1)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record, oldest first, across rotated files (unparseable lines are skipped)."""
    for p in log_files(path):
        for _, raw in _numbered_lines(p):
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict):
                    yield record
