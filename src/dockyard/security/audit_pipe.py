"""The daemon's end of the audit log: raw records out to the writer process, acknowledgements back.

Why a process: formatting a record as JSON and hashing it into the chain cost about as much Python time as
serving ``GET /_ping`` itself, and the event loop is the daemon's one serving thread (a writer *thread* was
measured too: its GIL hand-offs cost more than the work). So the loop only packs a record's values into a
byte buffer per request (:class:`~dockyard.security.audit_records.RecordBuffer`: no objects made, the shape
referenced) and sends the buffer in one ``write(2)`` every :data:`BATCH_DELAY` (a mutating call's ``start``
record at once) to :mod:`dockyard.security.audit_writer`, which formats, chains and writes them on another
core.

Guarantees kept from the in-loop design: a mutating call waits until its ``start`` record is on disk
(:meth:`AuditLog.add_durable`; the writer syncs it before acknowledging) and is refused while the log
cannot be written (:attr:`AuditLog.failure`, set from the writer's reports, or when the writer stops
keeping up or exits). Reads never wait: their records queue, and past ``max_pending`` bytes of queue they
are dropped and counted in the next line. A writer that exits is restarted after a second; records it had
not written are lost and logged as such (the chain itself stays intact: the new writer continues from the
last line on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from dockyard.security.audit_records import RecordBuffer, Shape
from dockyard.security.audit_writer import frame, take_frames

log = logging.getLogger("dockyard.audit")

RESTART_DELAY = 1.0
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ; the constant is missing from older Pythons' fcntl
PIPE_SIZE = 1 << 20  # fewer EAGAINs while the writer catches up after a burst
# Records of reads are sent in batches this far apart: waking the writer for every loop iteration cost the
# serving side more (in context switches on a busy two-core machine) than all its formatting saved; of 10,
# 50 and 200 ms, 50 ms cost the least per request (bench/security_overhead.py).
BATCH_DELAY = 0.05


class AuditLog:
    """Records go in with :meth:`add`/:meth:`add_durable`; :meth:`open` and :meth:`close` run the writer."""

    def __init__(self, path: Path, max_bytes: int = 64 << 20, max_pending: int = 16 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.failure: str | None = None  # why mutating calls are refused now, or None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # The hot path (the security stage and the pipeline's plans) adds records to this buffer (always
        # this one) and calls arm() when it was empty: a hand-over is scheduled whenever records are queued.
        self.queue = RecordBuffer()
        self._has_start = False  # a start record is queued (and a hand-over is scheduled at once)
        self._timer: asyncio.TimerHandle | None = None
        self._batch = 0
        self._durable: list[tuple[int, asyncio.Future[None]]] = []
        self._backlog = bytearray()
        self._dropped = 0
        self._acks = bytearray()
        self._ready: asyncio.Future[None] | None = None
        self._closing = False
        self._restart: asyncio.TimerHandle | None = None
        self._respawning: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Start the writer and wait until it has the log open.

        Raises:
            OSError: the writer could not open the log (its reason is in the message).
        """
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def close(self) -> None:
        """Send what is queued, let the writer write it all and exit."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
        self._hand_over()
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        self._unwatch(proc)
        with contextlib.suppress(OSError):
            os.set_blocking(proc.stdin.fileno(), True)
            await asyncio.to_thread(proc.stdin.write, bytes(self._backlog))
        self._backlog.clear()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            log.error("audit writer did not finish in 30 s; killing it")
            proc.kill()
            await asyncio.to_thread(proc.wait)
        _close_pipes(proc)

    # -- event loop side ------------------------------------------------------------------------------
    def add(self, shape: Shape, rid: str, status: int, nbytes: int, started: float, ended: float | None = None
            ) -> None:  # fmt: skip
        """Queue one ``done`` record (never waits: it goes out with the others of the next
        :data:`BATCH_DELAY`); ``ended`` defaults to now. The hot path calls ``queue.add`` itself."""
        if not self.queue:
            self.arm()
        self.queue.add(shape, rid, status, nbytes, started, ended)

    def arm(self) -> None:
        """Send what is queued :data:`BATCH_DELAY` from now."""
        assert self._loop is not None
        self._timer = self._loop.call_later(BATCH_DELAY, self._hand_over)

    def add_durable(self, shape: Shape, rid: str) -> asyncio.Future[None]:
        """Queue a ``start`` record (ended now) and send it now; the future is done when it is on disk
        (OSError when it cannot be)."""
        assert self._loop is not None
        self.queue.add(shape, rid, None, None, None)  # first: a record it refuses raises before any change
        fut = self._loop.create_future()
        self._durable.append((self._batch + 1, fut))  # the batch the next hand-over sends
        if not self._has_start:
            self._has_start = True
            self._loop.call_soon(self._hand_over)
        return fut

    def _hand_over(self) -> None:
        """Send the queued records as one frame."""
        has_start, self._has_start = self._has_start, False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue = self.queue  # the same buffer stays: the security stage and the plans hold it
        if not queue:
            return
        self._batch += 1
        if self._proc is None or len(self._backlog) > self.max_pending:
            self._shed(len(queue) - queue.starts)
            queue.take()
            return
        shapes, packed = queue.take()
        data = frame((self._batch, time.time(), time.monotonic(), self._dropped, has_start, shapes, packed))
        self._dropped = 0
        if self._backlog:
            self._backlog += data
            return
        self._send(data)

    def _send(self, data: bytes | bytearray) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._loop is not None
        fd = self._proc.stdin.fileno()
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the writer is gone; its stdout's EOF reports it
        if sent < len(data):
            self._backlog += data[sent:]
            self._loop.add_writer(fd, self._drain)

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._loop is not None
        fd = self._proc.stdin.fileno()
        try:
            sent = os.write(fd, self._backlog)
        except BlockingIOError:
            return
        except OSError:
            self._loop.remove_writer(fd)
            return
        del self._backlog[:sent]
        if not self._backlog:
            self._loop.remove_writer(fd)
            if self.failure is not None and self.failure.startswith("audit writer is not keeping up"):
                self.failure = None

    def _shed(self, reads: int) -> None:
        """No writer, or it is far behind: drop the batch's ``reads`` (``done`` records: counted) and fail
        the waiting ones (its ``start`` records)."""
        why = "audit writer is not running" if self._proc is None else "audit writer is not keeping up"
        self.failure = self.failure or why
        self._dropped += reads
        self._settle(self._batch, errno.EAGAIN, why)

    def _read_acks(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            data = os.read(self._proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._writer_exited()
            return
        self._acks += data
        for batch, code, message in take_frames(self._acks):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            self.failure = None if code == 0 else f"{self.path}: {message}"
            self._settle(batch, code, message)

    def _settle(self, batch: int, code: int, message: str) -> None:
        """Resolve the durable records of every batch up to ``batch`` (fail them when ``code`` is set)."""
        keep = []
        for n, fut in self._durable:
            if n > batch:
                keep.append((n, fut))
            elif fut.done():
                continue
            elif code == 0:
                fut.set_result(None)
            else:
                fut.set_exception(OSError(code, message))
        self._durable = keep

    # -- the writer process ---------------------------------------------------------------------------
    async def _spawn(self) -> None:
        assert self._loop is not None
        cmd = [sys.executable, "-m", "dockyard.security.audit_writer", str(self.path),
               "--max-bytes", str(self.max_bytes), "--max-pending", str(self.max_pending)]  # fmt: skip
        # Its own session: a ^C or a signal to the daemon's process group must not end it before the daemon
        # has handed over the last records (it ends when its stdin does).
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc = proc
        self._ready = self._loop.create_future()
        self._loop.add_reader(proc.stdout.fileno(), self._read_acks)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), 30)
        except (TimeoutError, OSError) as exc:
            self._unwatch(proc)
            proc.kill()
            await asyncio.to_thread(proc.wait)
            self._proc = None
            _close_pipes(proc)
            raise OSError(errno.EIO, f"audit writer for {self.path} did not start: {exc}") from None
        log.debug("audit writer %d writes %s", proc.pid, self.path)

    def _unwatch(self, proc: subprocess.Popen[bytes]) -> None:
        assert self._loop is not None and proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(proc.stdout.fileno())
            self._loop.remove_writer(proc.stdin.fileno())

    def _writer_exited(self) -> None:
        proc = self._proc
        assert proc is not None and self._loop is not None
        self._unwatch(proc)
        self._proc = None
        code = proc.wait()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(OSError(errno.EIO, f"it exited with status {code}"))
            return
        lost = len(self._backlog)
        self._backlog.clear()
        _close_pipes(proc)
        self.failure = "audit writer is not running"
        self._settle(self._batch, errno.EIO, self.failure)
        if self._closing:
            return
        log.error("audit writer exited with status %s (%d bytes of records not written); restarting it", code,
                  lost)  # fmt: skip
        self._restart = self._loop.call_later(RESTART_DELAY, self._respawn)

    def _respawn(self) -> None:
        self._restart = None

        async def again() -> None:
            try:
                await self._spawn()
            except OSError as exc:
                log.error("%s; retrying", exc)
                assert self._loop is not None
                self._restart = self._loop.call_later(RESTART_DELAY, self._respawn)

        self._respawning = asyncio.ensure_future(again())


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
