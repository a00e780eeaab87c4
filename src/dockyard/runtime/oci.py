"""The :class:`~dockyard.runtime.base.Runtime` over an OCI runtime (runc/crun) and conmon.

conmon runs ``<runtime> create`` and then supervises the container (see ``conmon.py``); this
module runs the other runtime verbs itself (start, kill, pause, resume, delete, ps, state) with an
explicit ``--root`` under ``state_root`` so dockyard's containers never mix with other engines'.
Exits are detected by a pidfd on conmon (``watch.py``); stdio goes through conmon's attach socket
(``attach.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any

from dockyard.errors import NotFound, SystemFailure
from dockyard.runtime.attach import ConmonAttach
from dockyard.runtime.base import (
    AttachStream,
    ContainerSetup,
    ExecProcess,
    ExecSetup,
    ExitStatus,
    RuntimeStatus,
)
from dockyard.runtime.conmon import (
    ATTACH_SOCKET,
    CONMON_PIDFILE,
    CONTAINER_PIDFILE,
    CTL_FIFO,
    SHIM_FILES,
    ConmonLaunch,
    launch_conmon,
    runtime_error_text,
)
from dockyard.runtime.exec import ExecCommand, start_exec
from dockyard.runtime.watch import ExitWatch, open_pidfd, read_exit

# runc: "container does not exist"; crun: "Error opening file `<root>/<id>/status`: No such file ..."
_NOT_EXIST = ("container does not exist", "/status`: No such file or directory")
_STATUSES = {s.value: s for s in RuntimeStatus}


class OciRuntime:
    """Runs containers with an OCI runtime binary, each supervised by its own conmon."""

    def __init__(self, binary: str, name: str, state_root: Path, conmon: str = "/usr/bin/conmon") -> None:
        """Set up the adapter.

        Args:
            binary: the runtime executable, or the wrapper that ``detect_runtime`` returned.
            name: the runtime's name as reported to clients (``runc``, ``crun``).
            state_root: directory for the runtime's state (``<name>/``) and conmon's exit files.
            conmon: the conmon executable.
        """
        self.name = name
        self._binary = binary
        self._conmon = conmon
        self._root = state_root / name
        self._exit_dir = state_root / "exits"
        self._root.mkdir(parents=True, exist_ok=True)
        self._exit_dir.mkdir(parents=True, exist_ok=True)
        self._bundles: dict[str, Path] = {}
        self._watches: dict[str, ExitWatch] = {}

    async def create(self, setup: ContainerSetup) -> int:
        """Create the container under a new conmon; returns the init pid."""
        setup.bundle.mkdir(parents=True, exist_ok=True)
        (setup.bundle / "config.json").write_text(json.dumps(setup.spec))
        launch = ConmonLaunch(
            container_id=setup.id,
            bundle=setup.bundle,
            runtime_path=self._binary,
            runtime_args=("--root", str(self._root)),
            exit_dir=self._exit_dir,
            log_path=setup.log_path,
            tty=setup.tty,
            open_stdin=setup.open_stdin,
            stdin_once=setup.stdin_once,
        )
        self._exit_file(setup.id).unlink(missing_ok=True)
        try:
            pid = await launch_conmon(self._conmon, launch)
        except SystemFailure:
            # A runtime failing half-way may leave its state or cgroups behind.
            with contextlib.suppress(NotFound, SystemFailure):
                await self._run(setup.id, "delete", "--force", setup.id)
            raise
        self._bundles[setup.id] = setup.bundle
        self._watch(setup.id, setup.bundle, self._conmon_pidfd(setup.id, setup.bundle))
        return pid

    async def start(self, container_id: str) -> None:
        """Start the created container's process."""
        self._bundle(container_id)
        await self._run(container_id, "start", container_id)

    async def wait(self, container_id: str) -> ExitStatus:
        """Resolve when the container's process has exited."""
        watch = self._watches.get(container_id)
        if watch is None:
            raise NotFound(f"No such container: {container_id}")
        return await asyncio.shield(watch.future)

    async def kill(self, container_id: str, signal: int) -> None:
        """Send ``signal`` to the container's main process."""
        self._bundle(container_id)
        await self._run(container_id, "kill", container_id, str(signal))

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container."""
        self._bundle(container_id)
        await self._run(container_id, "pause", container_id)

    async def resume(self, container_id: str) -> None:
        """Thaw a paused container."""
        self._bundle(container_id)
        await self._run(container_id, "resume", container_id)

    async def delete(self, container_id: str) -> None:
        """Remove the runtime's and conmon's state; idempotent."""
        with contextlib.suppress(NotFound):
            await self._run(container_id, "delete", "--force", container_id)
        watch = self._watches.pop(container_id, None)
        if watch is not None:
            watch.cancel()
        bundle = self._bundles.pop(container_id, None)
        if bundle is not None:
            for name in SHIM_FILES:
                (bundle / name).unlink(missing_ok=True)
        self._exit_file(container_id).unlink(missing_ok=True)

    async def attach(self, container_id: str) -> AttachStream:
        """Connect to the container's stdio through conmon."""
        return await ConmonAttach.connect(self._bundle(container_id) / ATTACH_SOCKET)

    async def resize(self, container_id: str, height: int, width: int) -> None:
        """Set the TTY size through conmon's control fifo."""
        ctl = self._bundle(container_id) / CTL_FIFO
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            # ENXIO: nobody reads the fifo, i.e. conmon is gone with the container.
            reason = "container is not running" if exc.errno in (errno.ENXIO, errno.ENOENT) else str(exc)
            raise SystemFailure(f"cannot resize tty: {reason}") from exc
        try:
            os.write(fd, f"1 {height} {width}\n".encode())
        finally:
            os.close(fd)

    async def exec(self, container_id: str, setup: ExecSetup) -> ExecProcess:
        """Run one more process in the container: ``<runtime> exec`` in the foreground (``exec.py``)."""
        cmd = ExecCommand(
            binary=self._binary,
            root=self._root,
            container_id=container_id,
            bundle=self._bundle(container_id),
            console_socket=self.name == "crun",
            socket_dir=self._root.parent / "tty",
        )
        return await start_exec(cmd, setup)

    async def pids(self, container_id: str) -> list[int]:
        """Host pids of every process in the container."""
        self._bundle(container_id)
        out = await self._run(container_id, "ps", "--format", "json", container_id)
        return [int(p) for p in json.loads(out or b"[]") or []]

    async def adopt(self, container_id: str, bundle: Path) -> RuntimeStatus | None:
        """Take over a container left by an earlier daemon; None when nothing knows it."""
        self._bundles[container_id] = bundle
        pidfd = self._conmon_pidfd(container_id, bundle)
        if pidfd is not None:
            self._watch(container_id, bundle, pidfd)
            return await self._state(container_id) or RuntimeStatus.RUNNING
        if read_exit(bundle, self._exit_file(container_id)) is not None:
            self._watch(container_id, bundle, None)
            return RuntimeStatus.STOPPED
        return await self._adopt_without_shim(container_id, bundle)

    async def _adopt_without_shim(self, container_id: str, bundle: Path) -> RuntimeStatus | None:
        # conmon was killed: fall back to watching the init process itself (exit code unknown).
        status = await self._state(container_id)
        if status is None:
            self._bundles.pop(container_id, None)
            return None
        pidfd = None
        if status is not RuntimeStatus.STOPPED:
            pidfd = open_pidfd(_read_int(bundle / CONTAINER_PIDFILE) or -1)
        self._watch(container_id, bundle, pidfd)
        return status if pidfd is not None else RuntimeStatus.STOPPED

    async def _state(self, container_id: str) -> RuntimeStatus | None:
        try:
            out = await self._run(container_id, "state", container_id)
        except NotFound:
            return None
        state: dict[str, Any] = json.loads(out)
        return _STATUSES.get(str(state.get("status")), RuntimeStatus.STOPPED)

    def _watch(self, container_id: str, bundle: Path, pidfd: int | None) -> None:
        old = self._watches.pop(container_id, None)
        if old is not None:
            old.cancel()
        self._watches[container_id] = ExitWatch(bundle, self._exit_file(container_id), pidfd)

    def _conmon_pidfd(self, container_id: str, bundle: Path) -> int | None:
        pid = _read_int(bundle / CONMON_PIDFILE)
        if pid is None:
            return None
        return open_pidfd(pid, ("conmon", container_id))

    def _bundle(self, container_id: str) -> Path:
        bundle = self._bundles.get(container_id)
        if bundle is None:
            raise NotFound(f"No such container: {container_id}")
        return bundle

    def _exit_file(self, container_id: str) -> Path:
        return self._exit_dir / container_id

    async def _run(self, container_id: str, *args: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            self._binary,
            "--root",
            str(self._root),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode == 0:
            return out
        text = runtime_error_text(err.decode(errors="replace"))
        if any(marker in text for marker in _NOT_EXIST):
            raise NotFound(f"No such container: {container_id}")
        raise SystemFailure(f"{self.name} {args[0]} failed: {text}")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
