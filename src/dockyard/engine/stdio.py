"""Container stdio use-cases: logs, attach, resize, top."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from dockyard.engine import state as st
from dockyard.engine.container import Container
from dockyard.engine.containers import ContainerService
from dockyard.errors import InvalidParameter, SystemFailure
from dockyard.logs.follow import follow_logs
from dockyard.logs.records import LogRecord
from dockyard.logs.timestamps import parse_log_window
from dockyard.runtime.base import AttachStream


@dataclass(frozen=True)
class LogOptions:
    """What a logs request asks for."""

    follow: bool = False
    stdout: bool = False
    stderr: bool = False
    since: str | None = None
    until: str | None = None
    tail: int | None = None


class StdioService:
    """Logs, attach, resize and top for containers."""

    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    def logs(self, ref: str, opts: LogOptions) -> tuple[Container, AsyncIterator[LogRecord]]:
        """Validate now; the records come from the returned iterator (followed when asked)."""
        c = self.containers.get(ref)
        if not (opts.stdout or opts.stderr):
            raise InvalidParameter("Bad parameters: you must choose at least one stream")
        since_ns, until_ns = parse_log_window(opts.since, opts.until, time.time_ns())
        # Without follow, an already-set signal streams what is there without holding it all in memory.
        stopped = c.live.stopped if opts.follow else _ALREADY_SET
        records = follow_logs(
            self.containers.d.paths.log(c.id), stdout=opts.stdout, stderr=opts.stderr, since_ns=since_ns,
            until_ns=until_ns, tail=opts.tail, stopped=stopped,
        )  # fmt: skip
        return c, records

    def attach_target(self, ref: str) -> Container:
        """The container an attach names (404 now, before the connection is taken over); reports the
        attach (dockerd does so before the stream, so ``docker run`` shows create, attach, start)."""
        c = self.containers.get(ref)
        self.containers.d.events.container(c, "attach")
        return c

    async def attach(self, c: Container) -> AttachStream:
        """The container's live stdio (waits for the start of a created container)."""
        return await self.containers.lifecycle.open_attach(c)

    async def resize(self, ref: str, height: int, width: int) -> None:
        """Set the TTY size."""
        c = self.containers.get(ref)
        st.check_running(c.id, c.state)
        if height < 0 or width < 0:
            raise InvalidParameter("height and width must be positive")
        if c.tty:
            await self.containers.d.runtime.resize(c.id, height, width)
        self.containers.d.events.container(c, "resize", height=str(height), width=str(width))

    async def top(self, ref: str, ps_args: str) -> dict[str, Any]:
        """``ps`` on the host, limited to the container's processes."""
        c = self.containers.get(ref)
        st.check_running(c.id, c.state)
        pids = set(await self.containers.d.runtime.pids(c.id))
        args = ps_args.split() if ps_args else ["-ef"]
        proc = await asyncio.create_subprocess_exec(
            "ps", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise InvalidParameter(f"ps: {err.decode(errors='replace').strip()}")
        self.containers.d.events.container(c, "top")
        return parse_ps(out.decode(errors="replace"), pids)


class _SetSignal:
    """A stop signal that is always set."""

    def is_set(self) -> bool:
        return True

    async def wait(self) -> bool:
        return True


_ALREADY_SET = _SetSignal()


def parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    """Docker's top: the header as Titles, rows whose PID column is one of ``pids``."""
    lines = output.splitlines()
    if not lines:
        raise SystemFailure("ps printed nothing")
    titles = lines[0].split()
    try:
        pid_col = titles.index("PID")
    except ValueError:
        raise InvalidParameter("Couldn't find PID field in ps output") from None
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) <= pid_col:
            continue
        try:
            pid = int(fields[pid_col])
        except ValueError:
            continue
        if pid in pids:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}
