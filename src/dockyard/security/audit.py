"""Append-only, hash-chained audit log: the file format, the chain, rotation and verification.

Each line carries ``prev``, the SHA-256 (hex) of the previous line's bytes (without its newline); the first
line of the first file chains from :data:`GENESIS`. Rotation (by size) renames the file to ``PATH.000001``,
``PATH.000002``, ... (oldest first) and the chain simply continues in the new file, so :func:`verify` checks
the rotated files and the live one as one sequence. A chain shows edits, deletions and reordering; it cannot
show that the newest lines were cut off, so operators who need that keep the head hash elsewhere
(``dockyard audit verify`` prints it).

:class:`ChainFile` is the writing side. The daemon does not use it directly: records are formatted, chained
and written by a writer process (:mod:`dockyard.security.audit_writer`) that the daemon feeds raw values
(:mod:`dockyard.security.audit_pipe`), because formatting and hashing a record on the serving event loop
cost as much as serving a small request. Standard library only: a hash chain needs no dependency. The
chaining loop (:func:`_chain_py`) runs in C when the optional extension :mod:`dockyard.security._chainfast`
is built (setup.py): ~1.4 µs per record in Python, ~0.4 µs in C on the same OpenSSL SHA-256; the Python
function is the reference the extension's tests compare it with, and serves when it is not built. The
writer chains most records without it: ``_chainfast.render`` makes a chunk of packed records into chained
lines in one bytes object, which :meth:`ChainFile.extend_rendered` appends.
"""

from __future__ import annotations

import contextlib
import fcntl
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
_ROTATED = re.compile(r"\.(\d{6})$")


def line_hash(line: bytes) -> str:
    """The chain hash of one line (without its trailing newline)."""
    return hashlib.sha256(line).hexdigest()


def _chain_py(bodies: list[str], head: str) -> tuple[list[bytes], str]:
    """Chain ``bodies`` after ``head``: their lines (each with ``prev``) and the new head.

    The reference for :func:`dockyard.security._chainfast.chain`, which the writer uses when it is built
    (tests/unit/test_chainfast.py compares the two).
    """
    lines: list[bytes] = []
    sha256 = hashlib.sha256
    for body in bodies:  # kept to a format, an encode and a hash per line
        line = f'{body},"prev":"{head}"}}'.encode()
        head = sha256(line).hexdigest()
        lines.append(line)
    return lines, head


try:
    from dockyard.security._chainfast import chain as _chain
except ImportError:  # the optional extension was not built (see setup.py): the reference loop serves
    _chain = _chain_py


def log_files(path: Path) -> list[Path]:
    """The rotated files of ``path`` (oldest first) followed by ``path`` itself when it exists."""
    rotated = sorted(p for p in path.parent.glob(path.name + ".*") if _ROTATED.search(p.name))
    return [*rotated, *([path] if path.exists() else [])]


def _rotation_index(p: Path) -> int | None:
    m = _ROTATED.search(p.name)
    return int(m.group(1)) if m else None


class ChainFile:
    """The file side of the log, used by the writer process: chain head, appends, rotation, retries.

    Synchronous on purpose: it runs in :mod:`dockyard.security.audit_writer`, a process of its own, so the
    serving event loop never formats, hashes or writes a record.
    """

    def __init__(self, path: Path, max_bytes: int = 64 << 20, max_pending: int = 16 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.failure: OSError | None = None  # the last write error, while the log cannot be written
        self.dropped = 0
        self._head = GENESIS
        self._fd = -1
        self._lock = -1
        self._size = 0
        self._pending = b""  # bytes chained but not yet on disk (kept and retried after a failed write)
        self._mid_line = False  # a partial write left the file ending inside a line
        self.unsynced = False  # written since the last sync

    @property
    def pending(self) -> bool:
        """Whether chained bytes wait for a retry."""
        return bool(self._pending)

    def open(self) -> None:
        """Take the log's lock, find the chain's head (cutting off a torn last line), open for appending.

        The lock (``PATH.lock``, held while this writer lives) keeps two writers off one chain: a restarted
        daemon's new writer waits until the old one, finishing its last records, has let go.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        self._lock = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._head = _chain_head(self.path)
        self._open_fd()

    def close(self) -> None:
        """Write what is chained, sync it and close the file."""
        if self.flush() is None and self.unsynced:
            self.sync()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def append(self, body: str, *, durable: bool = False) -> None:
        """Chain one record: ``body`` is a JSON object's text without its closing brace (adds ``prev``)."""
        self.extend([body], [durable])

    def extend(self, bodies: list[str], durable: list[bool] | None = None) -> None:
        """Chain records in order (see :meth:`append`); ``durable`` flags those that are never dropped.

        While writing fails and the unwritten backlog is large, records that are not durable are dropped
        before chaining (so the chain stays intact) and counted; the next chained line says how many.
        """
        if self.shedding:
            keep = durable or [False] * len(bodies)
            self.dropped += keep.count(False)
            bodies = [b for b, k in zip(bodies, keep, strict=True) if k]
        if not bodies:
            return
        if self.dropped:
            bodies = [f'{bodies[0]},"dropped_before":{self.dropped}', *bodies[1:]]
            self.dropped = 0
        lines, self._head = _chain(bodies, self._head)
        self._pending += b"\n".join(lines) + b"\n"

    @property
    def head(self) -> str:
        """The chain's head: the hash of the last line chained (what the next line's ``prev`` is)."""
        return self._head

    @property
    def shedding(self) -> bool:
        """Whether :meth:`extend` drops records that are not durable now: writing fails and the unwritten
        backlog is over ``max_pending``. Lines rendered for :meth:`extend_rendered` drop nothing."""
        return self.failure is not None and len(self._pending) > self.max_pending

    def extend_rendered(self, lines: bytes, head: str) -> None:
        """Append lines chained elsewhere (``_chainfast.render``), each followed by a newline.

        They must have been chained from :attr:`head` and, when :attr:`dropped` is set, carry
        ``"dropped_before"`` in the first one, as :meth:`extend` would; ``head`` is the hash of their last
        line. Empty ``lines`` change nothing. Callers check :attr:`shedding` first and use :meth:`extend`
        while it holds (rendering drops nothing).
        """
        if lines:
            self._pending += lines  # one copy at most: to an empty backlog, bytes += is the object itself
            self._head = head
            self.dropped = 0

    def flush(self) -> OSError | None:
        """Write everything chained so far in one system call (plus a retry of earlier unwritten bytes).

        Returns:
            None when all is on disk, else the error (the bytes are kept for the next flush).
        """
        error: OSError | None = None
        written = bool(self._pending)
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
            log.error("audit log %s cannot be written: %s", self.path, error)
        self.failure = error
        if error is None and written:
            self.unsynced = True
        return error

    def sync(self) -> OSError | None:
        """Make what was written durable (``fdatasync``); an error counts as a write failure."""
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            if self.failure is None:
                log.error("audit log %s cannot be synced: %s", self.path, exc)
            self.failure = exc
            return exc
        self.unsynced = False
        return None

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
