"""The container state machine: which transitions are allowed, and Docker's texts when they are not.

The record is mutable on purpose: a container's state changes many times in its life and is persisted
after each use-case; everything else in the domain is frozen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from dockyard.errors import Conflict, NotModified

ZERO_TIME = "0001-01-01T00:00:00Z"

CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
RESTARTING = "restarting"
REMOVING = "removing"
EXITED = "exited"
DEAD = "dead"
STATUSES = (CREATED, RUNNING, PAUSED, RESTARTING, REMOVING, EXITED, DEAD)


def rfc3339(ts: float) -> str:
    """Seconds since the epoch → RFC3339 with up to nanoseconds, UTC, as Docker (Go) writes times."""
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")  # Go's RFC3339Nano drops trailing zeros
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + fraction + "Z"


@dataclass
class State:
    """A container's runtime state, persisted with the container."""

    status: str = CREATED
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    oom_killed: bool = False

    @property
    def running(self) -> bool:
        """Running or paused: the process exists."""
        return self.status in (RUNNING, PAUSED)

    def to_doc(self) -> dict[str, Any]:
        """For the metadata store."""
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> State:
        """From the metadata store."""
        return cls(**doc)


def check_start(cid: str, state: State) -> None:
    """Docker: start of a running container is a 304; paused or being removed is a conflict."""
    if state.status == PAUSED:
        raise Conflict("cannot start a paused container, try unpause instead")
    if state.status == RUNNING:
        raise NotModified("container already started")
    if state.status in (REMOVING, DEAD):
        raise Conflict(f"container {cid} is marked for removal and cannot be started")


def check_kill(cid: str, state: State) -> None:
    """Kill needs a running process."""
    if not state.running:
        raise Conflict(f"Cannot kill container: {cid}: Container {cid} is not running")


def check_running(cid: str, state: State) -> None:
    """top, resize, pause: the process must exist."""
    if not state.running:
        raise Conflict(f"Container {cid} is not running")


def check_pause(cid: str, state: State) -> None:
    """Pause a running, not yet paused container."""
    check_running(cid, state)
    if state.status == PAUSED:
        raise Conflict(f"Container {cid} is already paused")


def check_unpause(cid: str, state: State) -> None:
    """Unpause a paused container."""
    if state.status != PAUSED:
        raise Conflict(f"Container {cid} is not paused")


def check_remove(name: str, state: State, force: bool) -> None:
    """A running container is removed only with force."""
    if state.status == REMOVING:
        raise Conflict(f"removal of container {name.lstrip('/')} is already in progress")
    if state.running and not force:
        if state.status == PAUSED:
            raise Conflict(
                f'cannot remove container "{name}": container is paused and must be unpaused first'
            )
        raise Conflict(
            f'cannot remove container "{name}": container is running: stop the container before removing or '
            "force remove"
        )


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(state: State, restarting: bool, now: float) -> str:
    """The ``Status`` column of ``docker ps``."""
    if state.status == PAUSED:
        return f"Up {human_duration(now - state.started_at)} (Paused)"
    if state.status == RUNNING:
        return f"Up {human_duration(now - state.started_at)}"
    if restarting or state.status == RESTARTING:
        return f"Restarting ({state.exit_code}) {human_duration(now - state.finished_at)} ago"
    if state.status == REMOVING:
        return "Removal In Progress"
    if state.status == DEAD:
        return "Dead"
    if state.status == EXITED and state.finished_at:
        return f"Exited ({state.exit_code}) {human_duration(now - state.finished_at)} ago"
    return "Created"
