"""``docker exec`` in the runtime: ``<runtime> --root <root> exec --process <process.json> <id>``.

The runtime runs in the foreground as our asyncio child: it exits with the process's exit code
(128+N for a signal), so no shim and no subreaper are needed. Exec processes therefore do not
survive a daemon restart: the runtime process is the daemon's child, and its stdio ends with the daemon.

Stdio:

* Without a terminal the runtime gets three pipes. crun hands them straight to the process, runc
  copies through them; either way the runtime's own error text also lands on the stderr pipe, so
  stderr is held back until the runtime confirmed the start (``--pid-file`` written, or stdout
  spoke). If the runtime exits without writing the pid file, the held text is its error message.
* With a terminal the two runtimes differ, which is why there are two strategies:

  - crun accepts ``--console-socket`` in the foreground: it sends the container-side pty master
    over the socket (SCM_RIGHTS, received with ``socket.recv_fds``); resize is TIOCSWINSZ on it.
  - runc refuses a console socket unless it detaches (and a detached exec loses its exit code to
    whoever reaps it). In the foreground runc relays between its own stdio and the container's
    pty, and on SIGWINCH copies its stdin terminal's size to it. So we open a pty pair, give runc
    the (raw) slave as stdin/stdout, and resize by TIOCSWINSZ on our master plus SIGWINCH to runc.

  In both the runtime's stderr is a separate pipe that carries only the runtime's messages.

Output fds are read with ``loop.add_reader`` into one queue (paused above a high-water mark),
which gives the :class:`~dockyard.runtime.base.AttachStream` shape the API's attach pump expects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import struct
import termios
import tty
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import SystemFailure
from dockyard.runtime.base import ExecSetup
from dockyard.runtime.conmon import runtime_error_text

_READ_SIZE = 65536
_HIGH_WATER = 64  # queued chunks before the readers pause (the client is slower than the process)
_RECHECK = 0.005  # seconds between pid-file checks while stderr is held back
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # crun colours its messages on a terminal
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[0-9:.]+Z: ")  # crun's time prefix on a terminal
_RUNTIME_MSG = 0  # stream number of the runtime's own stderr (not sent to the client)


@dataclass(frozen=True)
class ExecCommand:
    """How to reach the runtime for one container."""

    binary: str
    root: Path
    container_id: str
    bundle: Path
    console_socket: bool  # the runtime takes --console-socket without detaching (crun)
    socket_dir: Path


async def start_exec(cmd: ExecCommand, setup: ExecSetup) -> ExecSession:
    """Launch the runtime for ``setup`` and return the live session.

    Raises:
        SystemFailure: the runtime could not be launched at all.
    """
    files = _ExecFiles(cmd.bundle, setup.exec_id)
    files.write_process(setup.process)
    argv = [
        cmd.binary,
        "--root",
        str(cmd.root),
        "exec",
        "--pid-file",
        str(files.pid),
        "--process",
        str(files.process),
    ]
    terminal = bool(setup.process.get("terminal"))
    try:
        if not terminal:
            return await _start_pipes(argv, cmd.container_id, files, setup)
        if cmd.console_socket:
            return await _start_console(argv, cmd, files, setup)
        return await _start_relay(argv, cmd.container_id, files, setup)
    except OSError as exc:
        files.remove()
        raise SystemFailure(f"cannot run the OCI runtime: {exc}") from exc


async def _start_pipes(argv: list[str], cid: str, files: _ExecFiles, setup: ExecSetup) -> ExecSession:
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC) if setup.attach_stdin else (None, None)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cid,
            stdin=stdin_r if stdin_r is not None else asyncio.subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
        )
    except BaseException:
        _close(stdin_w, out_r, err_r)
        raise
    finally:
        _close(stdin_r, out_w, err_w)
    return ExecSession(proc, files, stdin_fd=stdin_w, outputs=[(1, out_r), (2, err_r)], hold=2)


async def _start_relay(argv: list[str], cid: str, files: _ExecFiles, setup: ExecSetup) -> ExecSession:
    master, slave = os.openpty()
    tty.setraw(slave)
    if setup.console_size:
        _set_winsize(master, *setup.console_size)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv[:4], "--tty", *argv[4:], cid, stdin=slave, stdout=slave, stderr=err_w
        )  # fmt: skip
    except BaseException:
        _close(master, err_r)
        raise
    finally:
        _close(slave, err_w)
    return ExecSession(
        proc,
        files,
        stdin_fd=master,
        outputs=[(1, master), (_RUNTIME_MSG, err_r)],
        terminal=master,
        relay=True,
    )


async def _start_console(
    argv: list[str], cmd: ExecCommand, files: _ExecFiles, setup: ExecSetup
) -> ExecSession:
    cmd.socket_dir.mkdir(parents=True, exist_ok=True)
    path = cmd.socket_dir / f"{setup.exec_id[:16]}.sock"
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        srv.bind(str(path))
        srv.listen(1)
        srv.setblocking(False)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv[:4], "--tty", "--console-socket", str(path), *argv[4:], cmd.container_id,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err_w,
            )  # fmt: skip
        finally:
            os.close(err_w)
        master = await _receive_master(srv, proc)
    except BaseException:
        _close(err_r)
        raise
    finally:
        srv.close()
        path.unlink(missing_ok=True)
    if master is None:  # the runtime failed before it made a terminal
        return ExecSession(proc, files, stdin_fd=None, outputs=[(_RUNTIME_MSG, err_r)])
    if setup.console_size:
        _set_winsize(master, *setup.console_size)
    # crun reports a failed exec on the terminal it already made: hold its output back like stderr.
    outputs = [(1, master), (_RUNTIME_MSG, err_r)]
    return ExecSession(proc, files, stdin_fd=master, outputs=outputs, terminal=master, hold=1)


async def _receive_master(srv: socket.socket, proc: asyncio.subprocess.Process) -> int | None:
    loop = asyncio.get_running_loop()
    accept = asyncio.ensure_future(loop.sock_accept(srv))
    exited = asyncio.ensure_future(proc.wait())
    await asyncio.wait([accept, exited], return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not accept.done():
        accept.cancel()
        return None
    conn, _ = accept.result()
    with conn:
        conn.setblocking(True)  # the runtime sends the fd right after connecting
        _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, conn, 1024, 1)
    if not fds:
        return None
    os.set_inheritable(fds[0], False)
    return fds[0]


class ExecSession:
    """One exec'd process: an :class:`~dockyard.runtime.base.ExecProcess` over the foreground runtime."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        files: _ExecFiles,
        *,
        stdin_fd: int | None,
        outputs: list[tuple[int, int]],
        terminal: int | None = None,
        relay: bool = False,
        hold: int | None = None,
    ) -> None:
        """Take over the runtime process and our ends of its stdio."""
        self._loop = asyncio.get_running_loop()
        self._proc = proc
        self._files = files
        self._stdin = stdin_fd
        self._terminal = terminal
        self._relay = relay
        self._open = {fd: stream for stream, fd in outputs}
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self._hold = hold  # the stream that may carry the runtime's error until the start is confirmed
        self._started = hold is None
        self._held: list[bytes] = []
        self._runtime_msg = bytearray()
        self._recheck: asyncio.TimerHandle | None = None
        self._failure: str | None = None
        self._closed = False
        self._pid = 0
        self._start_known: asyncio.Future[bool] = self._loop.create_future()
        for fd in self._open:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._readable, fd)
        if self._stdin is not None and self._stdin not in self._open:
            os.set_blocking(self._stdin, False)
        self._exit = asyncio.ensure_future(self._reap())

    # -- output -----------------------------------------------------------------------------------------
    async def read(self) -> tuple[int, bytes] | None:
        """Next output chunk as (stream, data); None once the process ended and its output is drained."""
        while not self._chunks:
            if not self._open and self._exit.done():
                return None
            self._wakeup = self._loop.create_future()
            await self._wakeup
        chunk = self._chunks.popleft()
        if self._paused and len(self._chunks) < _HIGH_WATER // 2:
            self._pause(False)
        return chunk

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's other side is closed
            data = b""
        if data:
            self._deliver(self._open[fd], data)
        else:
            self._eof(fd)

    def _deliver(self, stream: int, data: bytes) -> None:
        if stream == _RUNTIME_MSG:
            self._runtime_msg += data[: 65536 - len(self._runtime_msg)]
            return
        if not self._started:
            if stream == self._hold and not self._files.pid.exists():
                self._held.append(data)
                self._arm_recheck()
                return
            self._confirm_start()
        self._push(stream, data)

    def _push(self, stream: int, data: bytes) -> None:
        self._chunks.append((stream, data))
        if len(self._chunks) >= _HIGH_WATER and not self._paused:
            self._pause(True)
        self._wake()

    def _confirm_start(self) -> None:
        self._started = True
        if not self._start_known.done():
            self._start_known.set_result(True)
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        held, self._held = self._held, []
        for data in held:
            self._push(self._hold or 2, data)

    def _arm_recheck(self) -> None:
        if self._recheck is None:
            self._recheck = self._loop.call_later(_RECHECK, self._check_started)

    def _check_started(self) -> None:
        self._recheck = None
        if self._files.pid.exists():
            self._confirm_start()
        elif not self._exit.done():
            self._arm_recheck()

    async def started(self) -> bool:
        """Wait until the runtime wrote the pid file (True) or exited without starting the process (False)."""
        if not self._start_known.done():
            self._check_started()
        return await asyncio.shield(self._start_known)

    def _eof(self, fd: int) -> None:
        if self._open.pop(fd, None) is None:
            return
        self._loop.remove_reader(fd)
        if fd != self._terminal:  # the terminal is also stdin: closed by close()
            os.close(fd)
        self._wake()

    def _pause(self, paused: bool) -> None:
        self._paused = paused
        for fd, stream in self._open.items():
            if stream == _RUNTIME_MSG:
                continue
            if paused:
                self._loop.remove_reader(fd)
            else:
                self._loop.add_reader(fd, self._readable, fd)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- exit -------------------------------------------------------------------------------------------
    async def _reap(self) -> int:
        returncode = await self._proc.wait()
        self._drain_after_exit()
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if not self._files.pid.exists():
            text = (bytes(self._runtime_msg) + b"".join(self._held)).decode(errors="replace")
            self._failure = _STAMP.sub("", runtime_error_text(_ANSI.sub("", text)))
            self._held = []
            if not self._start_known.done():
                self._start_known.set_result(False)
        else:
            self._confirm_start()
        self.pid()
        self._files.remove()
        self._wake()
        return returncode if returncode >= 0 else 128 - returncode

    def _drain_after_exit(self) -> None:
        # What the process wrote before exiting is in the pipes; a background child that keeps them
        # open must not keep the exec attached (Docker returns when the exec'd process exits).
        for fd in list(self._open):
            while fd in self._open:
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    data = b""
                except OSError:
                    data = b""
                if not data:
                    self._eof(fd)
                    break
                self._deliver(self._open[fd], data)
        self._paused = False

    async def wait(self) -> int:
        """The exit code (128+N when killed by signal N)."""
        return await asyncio.shield(self._exit)

    @property
    def failure(self) -> str | None:
        """The runtime's message when the process never started."""
        return self._failure

    def pid(self) -> int:
        """Host pid from the runtime's pid file (kept after the exit); 0 while not known."""
        if not self._pid:
            with contextlib.suppress(OSError, ValueError):
                self._pid = int(self._files.pid.read_text().strip() or 0)
        return self._pid

    # -- input ------------------------------------------------------------------------------------------
    async def write_stdin(self, data: bytes) -> None:
        """Write to the process's stdin (or terminal); dropped once the process is gone."""
        view = memoryview(data)
        while view and self._stdin is not None and not self._exit.done():
            try:
                sent = os.write(self._stdin, view)
            except BlockingIOError:
                await self._writable(self._stdin)
                continue
            except OSError:
                return
            view = view[sent:]

    async def _writable(self, fd: int) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(fd, wake)
        waiters: list[asyncio.Future[object]] = [ready, self._exit]  # type: ignore[list-item]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._loop.remove_writer(fd)
            ready.cancel()

    async def close_stdin(self) -> None:
        """End of input: close the pipe, or send the terminal's EOF character."""
        if self._stdin is None:
            return
        if self._terminal is not None:
            await self.write_stdin(b"\x04")
            return
        fd, self._stdin = self._stdin, None
        os.close(fd)

    def resize(self, height: int, width: int) -> None:
        """TIOCSWINSZ on the terminal; runc learns it by SIGWINCH."""
        if self._terminal is None or self._exit.done() or self._terminal not in self._open:
            return
        _set_winsize(self._terminal, height, width)
        if self._relay and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGWINCH)

    def close(self) -> None:
        """Drop our ends of the stdio; the process keeps running (its output goes nowhere)."""
        if self._closed:
            return
        self._closed = True
        for fd in list(self._open):
            if self._open[fd] != _RUNTIME_MSG:
                self._eof(fd)
        _close(self._stdin, self._terminal if self._terminal != self._stdin else None)
        self._stdin = self._terminal = None
        self._chunks.clear()


class _ExecFiles:
    """The process.json and pid file of one exec, in the container's bundle."""

    def __init__(self, bundle: Path, exec_id: str) -> None:
        self.process = bundle / f"exec-{exec_id}.json"
        self.pid = bundle / f"exec-{exec_id}.pid"

    def write_process(self, process: dict[str, object]) -> None:
        self.pid.unlink(missing_ok=True)
        self.process.write_text(json.dumps(process))

    def remove(self) -> None:
        self.process.unlink(missing_ok=True)
        self.pid.unlink(missing_ok=True)


def _set_winsize(fd: int, height: int, width: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
