"""Exec use-cases: create, start, inspect and resize extra processes in running containers.

Exec records live in memory only, with their container: they are kept in a weak map keyed by the
:class:`Container` object (gone when the container is removed) and reset when the container starts a
new run. They do not survive a daemon restart, and neither do exec processes (see
``runtime/exec.py``). A record outlives its process so that clients can read the exit code.

Docker's rules are followed: the command, user and working directory are checked when the exec
starts; a process that cannot be started reports ``OCI runtime exec failed: ...`` on the output
stream and gets exit code 127 (command not found) or 126 (anything else).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.engine import state as st
from dockyard.engine.container import Container
from dockyard.engine.ocispec import DEFAULT_PATH, resolve_user
from dockyard.engine.spec_builder import held_capabilities
from dockyard.errors import Conflict, DockyardError, InvalidParameter, NotFound
from dockyard.runtime.base import AttachStream, ExecProcess, ExecSetup

if TYPE_CHECKING:  # containers imports views, which imports this module for ExecIDs
    from dockyard.engine.containers import ContainerService

# crun says "executable file `x` not found in $PATH"; Docker's text (runc's) is what clients look for.
_RUNC_NOT_FOUND = (
    'exec failed: unable to start container process: exec: "{}": executable file not found in $PATH'
)
_CRUN_NOT_FOUND = re.compile(r"executable file `(.*)` not found in \$PATH(?:: No such file or directory)?")


@dataclass(frozen=True)
class ExecConfig:
    """What ``POST /containers/{id}/exec`` asked for."""

    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    privileged: bool = False
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None


@dataclass(eq=False)
class Exec:
    """One exec instance and what is known about its process."""

    id: str
    container_id: str
    config: ExecConfig
    claimed: bool = False  # start was called (a second start is a conflict)
    running: bool = False
    exit_code: int | None = None
    process: ExecProcess | None = None
    launched: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Run:
    """The execs of one run of a container, and its base process spec."""

    started_at: float
    execs: dict[str, Exec] = field(default_factory=dict)
    base: tuple[dict[str, Any], Path] | None = None


# Keyed by the container object so that the records go with it; values must not refer to the key.
_RUNS: weakref.WeakKeyDictionary[Container, _Run] = weakref.WeakKeyDictionary()


def exec_ids(c: Container) -> list[str] | None:
    """``ExecIDs`` of container inspect: the execs of the current run (None when there are none)."""
    run = _RUNS.get(c)
    if run is None or run.started_at != c.state.started_at or not c.state.running or not run.execs:
        return None
    return list(run.execs)


def parse_exec_config(body: dict[str, Any]) -> ExecConfig:
    """Validate an ``ExecConfig`` body with Docker's messages."""
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
        raise InvalidParameter("No exec command specified")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidParameter("invalid Env: expected a list of strings")
    workdir = body.get("WorkingDir") or ""
    if workdir and not str(workdir).startswith("/"):
        raise InvalidParameter(
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path"
        )
    size = body.get("ConsoleSize")
    console: tuple[int, int] | None = None
    if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n >= 0 for n in size):
        console = (size[0], size[1]) if size[0] and size[1] else None
    return ExecConfig(
        cmd=tuple(cmd), env=tuple(env), working_dir=str(workdir), user=str(body.get("User") or ""),
        privileged=bool(body.get("Privileged")), tty=bool(body.get("Tty")),
        attach_stdin=bool(body.get("AttachStdin")), attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")), detach_keys=str(body.get("DetachKeys") or ""),
        console_size=console,
    )  # fmt: skip


class ExecService:
    """The exec use-cases the API calls."""

    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self._by_id: weakref.WeakValueDictionary[str, Exec] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- create / inspect -------------------------------------------------------------------------------
    def create(self, ref: str, body: dict[str, Any]) -> dict[str, str]:
        """``ContainerExec``: register an exec in a running container; returns ``{"Id": ...}``."""
        c = self.containers.get(ref)
        config = parse_exec_config(body)
        _check_running(c)
        run = _RUNS.get(c)
        if run is None or run.started_at != c.state.started_at:
            run = _RUNS[c] = _Run(c.state.started_at)
        e = Exec(secrets.token_hex(32), c.id, config)
        run.execs[e.id] = e
        self._by_id[e.id] = e
        self._event(e, "exec_create: " + _command(config))
        return {"Id": e.id}

    def get(self, exec_id: str) -> Exec:
        """An exec by id (404 with Docker's text when unknown or gone with its container)."""
        e = self._by_id.get(exec_id)
        if e is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return e

    def inspect(self, exec_id: str) -> dict[str, Any]:
        """``ExecInspect``."""
        e = self.get(exec_id)
        cfg = e.config
        process: dict[str, Any] = {
            "tty": cfg.tty, "entrypoint": cfg.cmd[0], "arguments": list(cfg.cmd[1:]),
            "privileged": cfg.privileged,
        }  # fmt: skip
        if cfg.user:
            process["user"] = cfg.user
        return {
            "ID": e.id, "Running": e.running, "ExitCode": e.exit_code, "ProcessConfig": process,
            "OpenStdin": cfg.attach_stdin, "OpenStderr": cfg.attach_stderr, "OpenStdout": cfg.attach_stdout,
            "CanRemove": False, "ContainerID": e.container_id, "DetachKeys": cfg.detach_keys,
            "Pid": e.process.pid() if e.process is not None else 0,
        }  # fmt: skip

    # -- start ------------------------------------------------------------------------------------------
    def claim(self, exec_id: str) -> Exec:
        """Check that the exec may start now and mark it started (before the connection is taken over)."""
        e = self.get(exec_id)
        if e.claimed:
            state = "is already running" if e.running else "has already run"
            raise Conflict(f"Error: Exec command {e.id} {state}")
        _check_running(self.containers.get(e.container_id))
        e.claimed = True
        return e

    async def start_detached(self, e: Exec) -> None:
        """Launch without a client (``docker exec -d``); returns once the process runs, errors are raised."""
        process = await self._launch(e, attach_stdin=False)
        self._spawn(self._drain(e, process))
        if not await process.started():
            await self.finish(e, process)
            raise InvalidParameter(runtime_failure_text(process.failure or "the process did not start"))

    async def start_attached(self, e: Exec) -> AttachStream:
        """Launch and return the exec's stdio; failures become a message on the stream."""
        try:
            process = await self._launch(e, attach_stdin=e.config.attach_stdin)
        except DockyardError as exc:
            e.exit_code = 126
            e.launched.set()
            return _Message(exc.message)
        return _ExecStream(self, e, process)

    async def _launch(self, e: Exec, attach_stdin: bool) -> ExecProcess:
        c = self.containers.get(e.container_id)
        try:
            _check_running(c)
            self._event(e, "exec_start: " + _command(e.config))
            setup = ExecSetup(e.id, self._process(c, e.config), attach_stdin, e.config.console_size)
            process = await self.containers.d.runtime.exec(c.id, setup)
        except DockyardError:
            e.exit_code = 126
            e.launched.set()
            raise
        e.process = process
        e.running = True
        e.launched.set()
        self._spawn(self.finish(e, process))
        return process

    async def finish(self, e: Exec, process: ExecProcess) -> None:
        """Record the exit (idempotent; runs for every exec, attached or not)."""
        code = await process.wait()
        if process.failure is not None:
            code = failure_exit_code(e.config.cmd[0], process.failure)
        e.exit_code = code
        if e.running:  # attached execs come here twice: report the exit once
            self._event(e, "exec_die", exitCode=str(code))
        e.running = False

    def _event(self, e: Exec, action: str, **extra: str) -> None:
        try:
            c = self.containers.get(e.container_id)
        except NotFound:
            return  # gone with its container
        self.containers.d.events.container(c, action, execID=e.id, **extra)

    async def _drain(self, e: Exec, process: ExecProcess) -> None:
        try:
            while await process.read() is not None:
                pass
        finally:
            process.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- resize -----------------------------------------------------------------------------------------
    async def resize(self, exec_id: str, height: int, width: int) -> None:
        """``ExecResize``: waits (up to 10 s, as dockerd) for the process to be launched."""
        e = self.get(exec_id)
        if height < 0 or width < 0:
            raise InvalidParameter("height and width must be positive")
        try:
            await asyncio.wait_for(e.launched.wait(), 10)
        except TimeoutError:
            raise Conflict("timeout waiting for exec session ready") from None
        if e.process is not None and e.config.tty:
            e.process.resize(height, width)

    # -- the process spec -------------------------------------------------------------------------------
    def _process(self, c: Container, cfg: ExecConfig) -> dict[str, Any]:
        base, rootfs = self._base(c)
        uid, gid, extra = resolve_user(rootfs, cfg.user or c.config.get("User") or "")
        process = dict(base)
        user: dict[str, Any] = {"uid": uid, "gid": gid}
        if extra:
            user["additionalGids"] = extra
        process.update(
            terminal=cfg.tty, args=list(cfg.cmd), env=_exec_env(c, cfg), user=user,
            cwd=cfg.working_dir or c.config.get("WorkingDir") or base.get("cwd") or "/",
        )  # fmt: skip
        if cfg.privileged:
            caps = held_capabilities()
            process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
        if cfg.tty and cfg.console_size:
            process["consoleSize"] = {"height": cfg.console_size[0], "width": cfg.console_size[1]}
        return process

    def _base(self, c: Container) -> tuple[dict[str, Any], Path]:
        """The container's own process section and rootfs, read once per run from its config.json."""
        run = _RUNS.get(c)
        if run is not None and run.base is not None and run.started_at == c.state.started_at:
            return run.base
        try:
            spec = json.loads((self.containers.d.paths.bundle(c.id) / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise Conflict(f"Container {c.id} is not running") from exc
        base = (dict(spec.get("process") or {}), Path(spec["root"]["path"]))
        if run is not None and run.started_at == c.state.started_at:
            run.base = base
        return base


def _command(cfg: ExecConfig) -> str:
    """The command as dockerd writes it in exec events: entrypoint, a space, the arguments."""
    return cfg.cmd[0] + " " + " ".join(cfg.cmd[1:])


def _check_running(c: Container) -> None:
    if c.state.status == st.PAUSED:
        raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
    if c.state.status == st.RESTARTING:
        raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
    if not c.state.running:
        raise Conflict(f"Container {c.id} is not running")


def _exec_env(c: Container, cfg: ExecConfig) -> list[str]:
    """dockerd's: PATH (unless set), HOSTNAME, TERM with a tty, the container's Env, then the exec's."""
    container_env = list(c.config.get("Env") or [])
    env = [] if any(e.startswith("PATH=") for e in container_env) else ["PATH=" + DEFAULT_PATH]
    env.append("HOSTNAME=" + (c.config.get("Hostname") or c.id[:12]))
    if cfg.tty:
        env.append("TERM=xterm")
    merged: dict[str, str] = {}
    for item in [*env, *container_env, *cfg.env]:
        merged[item.split("=", 1)[0]] = item
    return list(merged.values())


def runtime_failure_text(failure: str) -> str:
    """Docker's wording for a process the runtime could not start."""
    match = _CRUN_NOT_FOUND.search(failure)
    if match:
        failure = _RUNC_NOT_FOUND.format(match[1])
    return f"OCI runtime exec failed: {failure}: unknown"


def failure_exit_code(command: str, failure: str) -> int:
    """127 when the command does not exist, 126 otherwise (moby's translateContainerdStartErr)."""
    text = failure.lower()
    if command.lower() in text and (
        "no such file or directory" in text or "executable file not found" in text
    ):
        return 127
    return 126


class _ExecStream:
    """The exec's stdio for the attach pump: only the attached streams, then the exit, then the end."""

    def __init__(self, service: ExecService, e: Exec, process: ExecProcess) -> None:
        self._service = service
        self._exec = e
        self._process = process
        cfg = e.config
        self._wanted = (
            {1} if cfg.tty else {s for s, on in ((1, cfg.attach_stdout), (2, cfg.attach_stderr)) if on}
        )
        self._ended = False

    async def read(self) -> tuple[int, bytes] | None:
        """Next attached chunk; at the end the exit code is recorded before None is returned."""
        while not self._ended:
            chunk = await self._process.read()
            if chunk is None:
                self._ended = True
                await self._service.finish(self._exec, self._process)
                if self._process.failure is not None:
                    return 1, (runtime_failure_text(self._process.failure) + "\r\n").encode()
                return None
            if chunk[0] in self._wanted:
                return chunk
        return None

    async def write_stdin(self, data: bytes) -> None:
        """Forward client input."""
        await self._process.write_stdin(data)

    async def close_stdin(self) -> None:
        """The client's stdin ended."""
        await self._process.close_stdin()

    def close(self) -> None:
        """The client is gone or the stream ended."""
        self._process.close()


class _Message:
    """A stream that carries one error line (the exec could not be launched) and ends."""

    def __init__(self, text: str) -> None:
        self._pending: bytes | None = (text + "\r\n").encode()

    async def read(self) -> tuple[int, bytes] | None:
        """The message once, then the end."""
        data, self._pending = self._pending, None
        return (1, data) if data is not None else None

    async def write_stdin(self, data: bytes) -> None:
        """Input is dropped."""

    async def close_stdin(self) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to release."""
