"""Launching conmon, the per-container shim, and reading its answer.

conmon (podman's shim, packaged by Debian) runs ``<runtime> create``, then daemonizes and supervises
the container: it keeps the stdio pipes or pty, writes k8s-file logs, serves an attach socket, and
writes the exit code to files when the process ends. It outlives the daemon, which is why dockyard
uses it instead of supervising containers itself.

Protocol (conmon 2.x, ``--api-version 1``): the parent passes a pipe through ``_OCI_SYNCPIPE``;
conmon writes one JSON line ``{"data": <pid>}`` once the runtime created the container, or
``{"data": -1, "message": "<runtime stderr>"}`` when create failed. The first conmon process exits
right after forking its daemon, having written the daemon's pid to ``--conmon-pidfile``.

Files, all in the bundle (``--persist-dir`` = bundle, cwd = bundle): ``conmon.pid``, ``pidfile``
(container init), ``exit`` (exit code, 128+N for signals), ``oom``, ``attach`` (socket, placed
there by ``--full-attach``), ``ctl`` and ``winsz`` (fifos for resize).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import SystemFailure

CONMON_PIDFILE = "conmon.pid"
CONTAINER_PIDFILE = "pidfile"
EXIT_FILE = "exit"
OOM_FILE = "oom"
ATTACH_SOCKET = "attach"
CTL_FIFO = "ctl"
SHIM_FILES = (CONMON_PIDFILE, CONTAINER_PIDFILE, EXIT_FILE, OOM_FILE, ATTACH_SOCKET, CTL_FIFO, "winsz")

# runc logs with logrus: time="..." level=error msg="runc create failed: ..."
_LOGRUS_MSG = re.compile(r'level=(?:error|fatal) msg="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ConmonLaunch:
    """What conmon needs to create one container."""

    container_id: str
    bundle: Path
    runtime_path: str
    runtime_args: tuple[str, ...]
    exit_dir: Path
    log_path: Path
    tty: bool
    open_stdin: bool
    stdin_once: bool = True


def conmon_argv(conmon: str, launch: ConmonLaunch) -> list[str]:
    """The conmon command line for ``launch`` (modelled on podman's)."""
    bundle = str(launch.bundle)
    argv = [
        conmon,
        "--api-version",
        "1",
        "-c",
        launch.container_id,
        "-u",
        launch.container_id,
        "-n",
        launch.container_id[:12],
        "-r",
        launch.runtime_path,
        "-b",
        bundle,
        "-p",
        os.path.join(bundle, CONTAINER_PIDFILE),
        "-P",
        os.path.join(bundle, CONMON_PIDFILE),
        "-0",
        bundle,
        "--exit-dir",
        str(launch.exit_dir),
        "-l",
        f"k8s-file:{launch.log_path}",
        "--socket-dir-path",
        bundle,
        "--full-attach",
        "--log-level",
        "error",
    ]
    for arg in launch.runtime_args:
        argv += ["--runtime-arg", arg]
    if launch.tty:
        argv.append("-t")
    if launch.open_stdin:
        argv.append("-i")
        if not launch.stdin_once:
            argv.append("--leave-stdin-open")
    return argv


async def launch_conmon(conmon: str, launch: ConmonLaunch) -> int:
    """Run conmon for ``launch`` and wait until the runtime created the container.

    Returns:
        The container's init pid.

    Raises:
        SystemFailure: conmon or the runtime failed; the message carries the runtime's own text.
    """
    for name in SHIM_FILES:
        _unlink(launch.bundle / name)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "_OCI_SYNCPIPE": str(write_fd),
        }
        proc = await asyncio.create_subprocess_exec(
            *conmon_argv(conmon, launch),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=launch.bundle,
            env=env,
            pass_fds=(write_fd,),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise SystemFailure(f"conmon failed: {stderr.decode(errors='replace').strip()}")
        answer = await _read_sync_pipe(read_fd)
    finally:
        os.close(read_fd)
    return _parse_sync_answer(answer)


async def _read_sync_pipe(fd: int) -> bytes:
    # conmon keeps its end open for the container's lifetime: read one line, not to EOF.
    os.set_blocking(fd, False)
    buf = b""
    while b"\n" not in buf:
        await _readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        buf += chunk
    return buf


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _parse_sync_answer(answer: bytes) -> int:
    line = answer.split(b"\n", 1)[0].strip()
    if not line:
        raise SystemFailure("conmon exited without creating the container")
    try:
        message = json.loads(line)
        pid = int(message["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemFailure(f"unexpected answer from conmon: {line!r}") from exc
    if pid <= 0:
        raise SystemFailure(runtime_error_text(str(message.get("message", ""))))
    return pid


def runtime_error_text(stderr: str) -> str:
    """The useful part of a runtime's error output (runc's logrus ``msg=``, crun's plain text)."""
    found = _LOGRUS_MSG.findall(stderr)
    if found:
        return json.loads(f'"{found[-1]}"')  # type: ignore[no-any-return]
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "the OCI runtime failed without a message"


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
