"""Start, stop, kill, restart, pause, wait, exit handling, restart policies and re-adoption after a restart.

Concurrency rule: every use-case that changes a container holds its ``live.lock``; the exit handler does not
(it is the only writer of exit state, and stop/kill wait for it while holding the lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal as signals
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dockyard.engine import state as st
from dockyard.engine.container import Container, ContainerPaths, ContainerRepo, resolve_waiters
from dockyard.engine.events import EventBus
from dockyard.engine.ports import ImageLookup, RootfsDriver
from dockyard.engine.signals import parse_signal
from dockyard.engine.spec_builder import build_container_spec
from dockyard.errors import DockyardError, InvalidParameter, NotModified
from dockyard.runtime.base import AttachStream, ContainerSetup, ExitStatus, Runtime, RuntimeStatus

log = logging.getLogger("dockyard.engine")

_BACKOFF_START = 0.1
_BACKOFF_MAX = 60.0
WAIT_CONDITIONS = ("", "not-running", "next-exit", "removed")


@dataclass
class LifecycleDeps:
    """Collaborators of the lifecycle use-cases."""

    repo: ContainerRepo
    paths: ContainerPaths
    images: ImageLookup
    rootfs: RootfsDriver
    runtime: Runtime
    events: EventBus = field(default_factory=EventBus)


def classify_start_failure(command: str, message: str) -> tuple[int, str]:
    """Exit code and message of a failed start, in Docker's (runc's) words whatever the runtime said.

    The docker CLI picks its own exit status from the text (127 for "executable file not found" or "no such
    file or directory", 126 for "permission denied"), and crun words these errors differently.
    """
    lowered = message.lower()
    if "not found" in lowered or "no such file or directory" in lowered:
        if "/" in command:  # a path is not looked up in $PATH: runc reports the failed stat
            return 127, (
                f'OCI runtime create failed: unable to start container process: exec: "{command}": '
                f"stat {command}: no such file or directory"
            )
        if "executable file" in lowered or f'"{command}"' in message or f"`{command}`" in message:
            return 127, (
                f'OCI runtime create failed: unable to start container process: exec: "{command}": '
                "executable file not found in $PATH"
            )
        return 127, f"OCI runtime create failed: {message}: no such file or directory"
    denied = "permission denied" in lowered or "is a directory" in lowered
    if denied or ("operation not permitted" in lowered and "executable" in lowered):
        return (
            126,
            "OCI runtime create failed: unable to start container process: "
            f'exec: "{command}": permission denied',
        )
    return 128, message


class Lifecycle:
    """The running side of containers."""

    def __init__(self, deps: LifecycleDeps, on_removed: Callable[[Container], object]) -> None:
        self.d = deps
        self._remove = on_removed  # auto-remove goes through the same use-case as DELETE
        self._backoff: dict[str, float] = {}

    # -- start ------------------------------------------------------------------------------------------
    async def start(self, ref: str) -> None:
        """Start a created or stopped container (304 when already running)."""
        c = self.d.repo.get(ref)
        async with c.live.lock:
            st.check_start(c.id, c.state)
            c.manually_stopped = False
            c.live.exit_on_next = False
            await self._start_locked(c)

    async def _start_locked(self, c: Container) -> None:
        d = self.d
        try:
            rootfs = await d.rootfs.mount_rootfs(c.id, d.images.lower_dirs(c.image_id))
            spec = build_container_spec(c, rootfs, d.paths)
            bundle = d.paths.bundle(c.id)
            bundle.mkdir(parents=True, exist_ok=True)
            setup = ContainerSetup(
                c.id, bundle, spec, c.tty, bool(c.config.get("OpenStdin")), d.paths.log(c.id),
                stdin_once=bool(c.config.get("StdinOnce")),
            )  # fmt: skip
            pid = await self._create(setup)
        except DockyardError as exc:
            raise await self._failed_start(c, exc) from exc
        await self._connect_pending_attaches(c)
        try:
            await d.runtime.start(c.id)
        except DockyardError as exc:
            raise await self._failed_start(c, exc) from exc
        c.state = st.State(status=st.RUNNING, pid=pid, started_at=time.time())
        c.has_run = True
        c.live.stopped.clear()
        d.repo.save(c)
        d.events.container(c, "start")
        c.live.monitor = asyncio.create_task(self._monitor(c))

    async def _create(self, setup: ContainerSetup) -> int:
        """Create in the runtime; state left by a daemon that died mid-start is cleared and retried once."""
        try:
            return await self.d.runtime.create(setup)
        except DockyardError as exc:
            if "exists" not in exc.message:
                raise
        await self.d.runtime.delete(setup.id)
        return await self.d.runtime.create(setup)

    async def _failed_start(self, c: Container, exc: DockyardError) -> DockyardError:
        """Record the failure; a missing (127) or non-executable (126) command is a client error."""
        code, text = classify_start_failure(c.path, exc.message)
        c.state.status = st.EXITED if c.has_run else st.CREATED
        c.state.exit_code = code
        c.state.error = text
        c.state.finished_at = c.state.finished_at or 0.0
        await self._release(c)
        self.d.repo.save(c)
        for fut in c.live.pre_start:
            if not fut.done():
                fut.set_exception(exc)
        c.live.pre_start.clear()
        return InvalidParameter(text) if code in (126, 127) else exc

    async def _connect_pending_attaches(self, c: Container) -> None:
        """Attach requests that came before start get their stream now, before the process runs."""
        pending, c.live.pre_start = c.live.pre_start, []
        for fut in pending:
            if fut.done():
                continue
            try:
                stream = await self.d.runtime.attach(c.id)
            except DockyardError as exc:
                fut.set_exception(exc)
                continue
            fut.set_result(stream)  # type: ignore[arg-type]

    # -- exit -------------------------------------------------------------------------------------------
    async def _monitor(self, c: Container) -> None:
        try:
            status = await self.d.runtime.wait(c.id)
        except DockyardError as exc:
            log.error("lost track of container %s: %s", c.id[:12], exc.message)
            status = ExitStatus(exit_code=255, finished_at=time.time())
        await self._on_exit(c, status)

    async def _on_exit(self, c: Container, status: ExitStatus) -> None:
        ran_for = status.finished_at - c.state.started_at
        # Clean up before the state says "exited": a client that sees it may remove the container at once.
        await self._release(c)
        c.state.status = st.EXITED
        c.state.pid = 0
        c.state.exit_code = status.exit_code
        c.state.finished_at = status.finished_at
        c.state.oom_killed = status.oom_killed
        self.d.repo.save(c)
        self.d.events.container(
            c, "die", exitCode=str(status.exit_code), execDuration=str(int(max(ran_for, 0)))
        )
        c.live.stopped.set()
        resolve_waiters(c.live.exit_waiters, status.exit_code)
        if self._should_restart(c, ran_for):
            self._schedule_restart(c, ran_for)
        elif c.host_config.get("AutoRemove"):
            await self._auto_remove(c)

    async def _release(self, c: Container) -> None:
        """Best-effort: the runtime's state and bundle, and the rootfs mount, of a container that stopped."""
        await asyncio.gather(
            self._quietly(self._delete_runtime_state(c)),
            self._quietly(self.d.rootfs.unmount(c.id, unless_held=True)),  # a copy out of it may be running
        )

    async def _delete_runtime_state(self, c: Container) -> None:
        """Runtime state and bundle go together: a bundle on disk means the runtime may know the container."""
        await self.d.runtime.delete(c.id)
        await asyncio.to_thread(shutil.rmtree, self.d.paths.bundle(c.id), True)

    @staticmethod
    async def _quietly(step: Awaitable[None]) -> None:
        """Best-effort cleanup: a failure is logged, not raised (the exit must still be recorded)."""
        try:
            await step
        except (DockyardError, OSError) as exc:
            log.warning("cleanup of a stopped container: %s", exc)

    def _should_restart(self, c: Container, ran_for: float) -> bool:
        """Docker's restart manager: always / unless-stopped / on-failure[:N]."""
        if c.live.exit_on_next:
            return False
        policy = c.host_config.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if name == "always":
            return True
        if name == "unless-stopped":
            return not c.manually_stopped
        if name == "on-failure":
            limit = policy.get("MaximumRetryCount") or 0
            return c.state.exit_code != 0 and (limit == 0 or c.restart_count < limit)
        return False

    def _schedule_restart(self, c: Container, ran_for: float) -> None:
        delay = self._backoff.get(c.id, 0.0)
        delay = _BACKOFF_START if ran_for >= 10 or delay == 0 else min(delay * 2, _BACKOFF_MAX)
        self._backoff[c.id] = delay
        c.state.status = st.RESTARTING
        self.d.repo.save(c)
        loop = asyncio.get_running_loop()
        c.live.restart_timer = loop.call_later(delay, lambda: asyncio.ensure_future(self._auto_restart(c)))

    async def _auto_restart(self, c: Container) -> None:
        c.live.restart_timer = None
        async with c.live.lock:
            if c.state.status != st.RESTARTING or c.live.exit_on_next:
                return
            c.restart_count += 1
            try:
                await self._start_locked(c)
            except DockyardError as exc:
                log.warning("restart of %s failed: %s", c.id[:12], exc.message)
                if self._should_restart(c, 0.0):
                    self._schedule_restart(c, 0.0)

    async def _auto_remove(self, c: Container) -> None:
        try:
            result = self._remove(c)
            if asyncio.iscoroutine(result):
                await result
        except DockyardError as exc:
            log.warning("auto-remove of %s failed: %s", c.id[:12], exc.message)

    # -- stop / kill --------------------------------------------------------------------------------------
    async def stop(self, ref: str, signal: str | None, timeout: int | None) -> None:
        """Stop signal, then SIGKILL after the timeout (304 when not running)."""
        c = self.d.repo.get(ref)
        async with c.live.lock:
            if c.state.status == st.RESTARTING:
                self._cancel_restart(c)
                c.manually_stopped = True
                self.d.repo.save(c)
                return
            if not c.state.running:
                raise NotModified("container already stopped")
            c.manually_stopped = True
            c.live.exit_on_next = True
            self.d.repo.save(c)
            await self._stop_locked(c, signal, timeout)

    async def _stop_locked(self, c: Container, signal: str | None, timeout: int | None) -> None:
        stop_signal = parse_signal(signal or c.config.get("StopSignal") or None, default=signals.SIGTERM)
        if timeout is None:
            configured = c.config.get("StopTimeout")
            timeout = configured if isinstance(configured, int) else 10
        exited = self._exit_future(c)
        with contextlib.suppress(DockyardError):
            await self._signal(c, stop_signal)
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout if timeout >= 0 else None)
        except TimeoutError:
            with contextlib.suppress(DockyardError):
                await self._signal(c, signals.SIGKILL)
            await exited
        self.d.events.container(c, "stop")

    async def kill(self, ref: str, signal: str | None) -> None:
        """Send a signal (default SIGKILL); 409 when not running."""
        c = self.d.repo.get(ref)
        number = parse_signal(signal, default=signals.SIGKILL)
        async with c.live.lock:
            st.check_kill(c.id, c.state)
            if number in (signals.SIGKILL, signals.SIGTERM, signals.SIGINT):
                c.manually_stopped = True
                self.d.repo.save(c)
            stop_signal = parse_signal(c.config.get("StopSignal") or None, default=signals.SIGTERM)
            if number == stop_signal:
                c.live.exit_on_next = True
            exited = self._exit_future(c) if number == signals.SIGKILL else None
            await self._signal(c, number)
            if exited is not None:
                await exited  # Docker returns from kill -9 once the container is gone

    async def _signal(self, c: Container, number: int) -> None:
        self.d.events.container(c, "kill", signal=str(number))  # before the exit it may cause (its die)
        await self.d.runtime.kill(c.id, number)
        if c.state.status == st.PAUSED and number == signals.SIGKILL:
            # A frozen task acts on SIGKILL only once thawed (cgroup v1 freezer).
            with contextlib.suppress(DockyardError):
                await self.d.runtime.resume(c.id)

    async def restart(self, ref: str, signal: str | None, timeout: int | None) -> None:
        """Stop (if running) and start again."""
        c = self.d.repo.get(ref)
        async with c.live.lock:
            if c.state.status == st.RESTARTING:
                self._cancel_restart(c)
            if c.state.running:
                c.live.exit_on_next = True
                await self._stop_locked(c, signal, timeout)
            c.manually_stopped = False
            c.live.exit_on_next = False
            await self._start_locked(c)
            self.d.events.container(c, "restart")

    async def halt_locked(self, c: Container) -> None:
        """Make sure nothing runs or restarts: cancel a pending restart, kill a running (or paused) process
        and await its exit. The caller holds the container's lock (removal)."""
        if c.state.status == st.RESTARTING:
            self._cancel_restart(c)
        if not c.state.running:
            return
        c.live.exit_on_next = True
        exited = self._exit_future(c)
        await self._signal(c, signals.SIGKILL)
        await exited

    def _cancel_restart(self, c: Container) -> None:
        if c.live.restart_timer is not None:
            c.live.restart_timer.cancel()
            c.live.restart_timer = None
        c.state.status = st.EXITED

    # -- pause --------------------------------------------------------------------------------------------
    async def pause(self, ref: str) -> None:
        """Freeze the container's processes."""
        c = self.d.repo.get(ref)
        async with c.live.lock:
            st.check_pause(c.id, c.state)
            await self.d.runtime.pause(c.id)
            c.state.status = st.PAUSED
            self.d.repo.save(c)
            self.d.events.container(c, "pause")

    async def unpause(self, ref: str) -> None:
        """Thaw a paused container."""
        c = self.d.repo.get(ref)
        async with c.live.lock:
            st.check_unpause(c.id, c.state)
            await self.d.runtime.resume(c.id)
            c.state.status = st.RUNNING
            self.d.repo.save(c)
            self.d.events.container(c, "unpause")

    # -- wait ---------------------------------------------------------------------------------------------
    def wait(self, ref: str, condition: str) -> asyncio.Future[int]:
        """A future of the exit code for Docker's wait conditions (validated now, resolved later)."""
        if condition not in WAIT_CONDITIONS:
            raise InvalidParameter(f'invalid condition: "{condition}"')
        c = self.d.repo.get(ref)
        loop = asyncio.get_running_loop()
        if condition == "removed":
            fut: asyncio.Future[int] = loop.create_future()
            c.live.removed_waiters.append(fut)
            return fut
        if condition in ("", "not-running") and not c.state.running and c.state.status != st.RESTARTING:
            fut = loop.create_future()
            fut.set_result(c.state.exit_code)
            return fut
        return self._exit_future(c)

    def _exit_future(self, c: Container) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        c.live.exit_waiters.append(fut)
        return fut

    # -- attach support -----------------------------------------------------------------------------------
    async def open_attach(self, c: Container) -> AttachStream:
        """Connect to the container's stdio now if it runs, else when it next starts."""
        if c.state.running:
            return await self.d.runtime.attach(c.id)
        fut: asyncio.Future[AttachStream] = asyncio.get_running_loop().create_future()
        c.live.pre_start.append(fut)  # type: ignore[arg-type]
        try:
            return await fut
        finally:
            if fut in c.live.pre_start:  # type: ignore[comparison-overlap]
                c.live.pre_start.remove(fut)  # type: ignore[arg-type]

    # -- daemon start ---------------------------------------------------------------------------------------
    async def restore(self) -> None:
        """Re-adopt containers left running by an earlier daemon; apply restart policies like dockerd."""
        for c in self.d.repo.all():
            try:
                await self._restore_one(c)
            except DockyardError as exc:
                log.error("could not restore container %s: %s", c.id[:12], exc.message)

    async def _restore_one(self, c: Container) -> None:
        if c.state.running or c.state.status == st.RESTARTING:
            found = await self.d.runtime.adopt(c.id, self.d.paths.bundle(c.id))
            if found in (RuntimeStatus.RUNNING, RuntimeStatus.PAUSED):
                c.state.status = st.PAUSED if found is RuntimeStatus.PAUSED else st.RUNNING
                c.live.stopped.clear()
                self.d.repo.save(c)
                c.live.monitor = asyncio.create_task(self._monitor(c))
                return
            if found is RuntimeStatus.STOPPED:
                await self._monitor(c)  # the recorded exit code, then the restart policy
                return
            await self._on_exit(c, ExitStatus(exit_code=255, finished_at=time.time()))
            return
        if self.d.paths.bundle(c.id).exists():
            await self._settle_interrupted_start(c)
        c.live.stopped.set()
        if c.has_run and c.state.status == st.EXITED and self._restart_at_boot(c):
            async with c.live.lock:
                await self._start_locked(c)

    async def _settle_interrupted_start(self, c: Container) -> None:
        """A daemon that died inside start may have left a created (or even running) container the metadata
        does not know about: remove it, so the record stays the truth (the client never got its 204)."""
        found = await self.d.runtime.adopt(c.id, self.d.paths.bundle(c.id))
        if found in (RuntimeStatus.RUNNING, RuntimeStatus.PAUSED, RuntimeStatus.CREATED):
            with contextlib.suppress(DockyardError):
                await self.d.runtime.kill(c.id, signals.SIGKILL)
            with contextlib.suppress(TimeoutError, DockyardError):
                await asyncio.wait_for(self.d.runtime.wait(c.id), 10)
        await self._release(c)

    def _restart_at_boot(self, c: Container) -> bool:
        name = (c.host_config.get("RestartPolicy") or {}).get("Name") or "no"
        return name == "always" or (name == "unless-stopped" and not c.manually_stopped)

    async def shutdown(self) -> None:
        """Stop watching (containers keep running under their shims)."""
        for c in self.d.repo.all():
            if c.live.monitor is not None:
                c.live.monitor.cancel()
            if c.live.restart_timer is not None:
                c.live.restart_timer.cancel()
