"""The contract between the engine and an OCI runtime + shim.

The engine decides *what* should happen (state rules); an implementation of :class:`Runtime` makes it
happen with the OCI runtime and the per-container shim, and reports what happened. Implementations
raise :mod:`dockyard.errors` kinds only (``NotFound`` when the runtime does not know the container,
``SystemFailure`` with the runtime's own message otherwise).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class RuntimeStatus(enum.Enum):
    """What the runtime reports for a container (OCI runtime-spec states, plus paused)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ContainerSetup:
    """Everything the runtime needs to create one container.

    Attributes:
        id: the container id (64 hex).
        bundle: a directory the runtime owns for this container (config.json, shim files).
        spec: the OCI runtime spec; ``root.path`` points at the already-mounted rootfs.
        tty: allocate a pseudo-terminal for the process.
        open_stdin: keep the process's stdin open for attach.
        log_path: where the shim writes the container's output (k8s-file format).
        stdin_once: with ``open_stdin``, close the process's stdin when an attached client
            closes its stdin or goes away (Docker's ``StdinOnce``); otherwise stdin stays open for
            the next attach.
    """

    id: str
    bundle: Path
    spec: dict[str, Any]
    tty: bool
    open_stdin: bool
    log_path: Path
    stdin_once: bool = True


@dataclass(frozen=True)
class ExitStatus:
    """How a container's main process ended."""

    exit_code: int
    finished_at: float  # seconds since the epoch
    oom_killed: bool = False


class AttachStream(Protocol):
    """A live connection to a container's stdio through the shim."""

    async def read(self) -> tuple[int, bytes] | None:
        """Next output chunk as (stream, data), stream 1 = stdout, 2 = stderr; None at end of output."""
        ...

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the container's stdin."""
        ...

    async def close_stdin(self) -> None:
        """Close the container's stdin (the client half-closed)."""
        ...

    def close(self) -> None:
        """Drop the connection; the container keeps running."""
        ...


@dataclass(frozen=True)
class ExecSetup:
    """One extra process to run in a running container (``docker exec``).

    Attributes:
        exec_id: the exec's id (64 hex); names the runtime's files for it.
        process: the OCI ``process`` object (args, env, cwd, user, terminal, capabilities...).
        attach_stdin: give the process a stdin the caller writes to; otherwise it reads /dev/null.
        console_size: initial (height, width) of the terminal when ``process["terminal"]``.
    """

    exec_id: str
    process: dict[str, Any]
    attach_stdin: bool = False
    console_size: tuple[int, int] | None = None


class ExecProcess(AttachStream, Protocol):
    """A running exec: its stdio (as an :class:`AttachStream`), its exit, its terminal."""

    async def wait(self) -> int:
        """The exit code once the process ended (128+N for a signal)."""
        ...

    async def started(self) -> bool:
        """True once the process runs (or ran); False when the runtime could not start it."""
        ...

    @property
    def failure(self) -> str | None:
        """After ``wait``: the runtime's message when the process could not be started, else None."""
        ...

    def pid(self) -> int:
        """Host pid of the process, 0 while unknown."""
        ...

    def resize(self, height: int, width: int) -> None:
        """Set the terminal size (no-op without a terminal)."""
        ...


class Runtime(Protocol):
    """An OCI runtime driven through a shim that outlives the daemon."""

    name: str

    async def create(self, setup: ContainerSetup) -> int:
        """Create the container (shim running, process not yet started); returns the init pid."""
        ...

    async def start(self, container_id: str) -> None:
        """Start the created container's process."""
        ...

    async def wait(self, container_id: str) -> ExitStatus:
        """Resolve when the container's process has exited (also for adopted containers)."""
        ...

    async def kill(self, container_id: str, signal: int) -> None:
        """Send a signal to the container's main process."""
        ...

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container."""
        ...

    async def resume(self, container_id: str) -> None:
        """Thaw a paused container."""
        ...

    async def delete(self, container_id: str) -> None:
        """Remove the runtime's and the shim's state; idempotent; the container must be stopped."""
        ...

    async def attach(self, container_id: str) -> AttachStream:
        """Connect to the container's stdio (works before start, and after a daemon restart)."""
        ...

    async def resize(self, container_id: str, height: int, width: int) -> None:
        """Set the TTY size of a container created with a tty."""
        ...

    async def exec(self, container_id: str, setup: ExecSetup) -> ExecProcess:
        """Run one more process in the running container; returns once it was launched."""
        ...

    async def pids(self, container_id: str) -> list[int]:
        """Host pids of every process in the container."""
        ...

    async def adopt(self, container_id: str, bundle: Path) -> RuntimeStatus | None:
        """After a daemon restart: report the state of a container left by an earlier daemon.

        Returns None when neither the runtime nor the shim knows it any more. Afterwards ``wait``
        works for it as for a container this daemon created.
        """
        ...
