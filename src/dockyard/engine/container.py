"""The container record and its repository (SQLite rows + an in-memory index for fast lists).

Each container is one row holding a JSON document; the index answers name and id-prefix lookups without
touching the database. Every change goes through :class:`ContainerRepo` inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.engine.state import State
from dockyard.errors import Conflict, InvalidParameter, NotFound
from dockyard.store.db import Database

SCHEMA = ["CREATE TABLE containers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL)"]


@dataclass(eq=False)
class Live:
    """What exists only while the daemon runs: waiters, pending attaches, the per-container lock."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exit_waiters: list[asyncio.Future[int]] = field(default_factory=list)
    removed_waiters: list[asyncio.Future[int]] = field(default_factory=list)
    pre_start: list[asyncio.Future[None]] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    monitor: asyncio.Task[None] | None = None
    restart_timer: asyncio.TimerHandle | None = None
    exit_on_next: bool = False  # a stop was asked: do not apply the restart policy to this exit


def resolve_waiters(waiters: list[asyncio.Future[int]], code: int) -> None:
    """Hand ``code`` to every waiter still waiting, and forget them."""
    pending = list(waiters)
    waiters.clear()
    for fut in pending:
        if not fut.done():
            fut.set_result(code)


@dataclass(eq=False)
class Container:
    """One container: what the client asked for, merged with its image, and its state."""

    id: str
    name: str
    created: float
    image: str
    image_id: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    path: str
    args: list[str]
    state: State = field(default_factory=State)
    restart_count: int = 0
    manually_stopped: bool = False
    has_run: bool = False
    live: Live = field(default_factory=Live)

    @property
    def tty(self) -> bool:
        """The container's process has a terminal."""
        return bool(self.config.get("Tty"))

    def to_doc(self) -> str:
        """JSON for the metadata row."""
        doc = {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "image": self.image,
            "image_id": self.image_id,
            "config": self.config,
            "host_config": self.host_config,
            "path": self.path,
            "args": self.args,
            "state": self.state.to_doc(),
            "restart_count": self.restart_count,
            "manually_stopped": self.manually_stopped,
            "has_run": self.has_run,
        }
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_doc(cls, text: str) -> Container:
        """Rebuild from a metadata row."""
        doc = json.loads(text)
        doc["state"] = State.from_doc(doc["state"])
        return cls(**doc)


@dataclass(frozen=True)
class ContainerPaths:
    """Where a container's files live (data root: survives reboots; exec root: runtime state)."""

    data_root: Path
    exec_root: Path

    def dir(self, cid: str) -> Path:
        """Per-container persistent directory."""
        return self.data_root / "containers" / cid

    def log(self, cid: str) -> Path:
        """The container's log, written by the shim."""
        return self.dir(cid) / "container.log"

    def bundle(self, cid: str) -> Path:
        """The OCI bundle and shim files."""
        return self.exec_root / "bundles" / cid


class ContainerRepo:
    """All containers, indexed by id and name, persisted one row each."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.register_schema("containers", SCHEMA)
        self._by_id: dict[str, Container] = {}
        self._by_name: dict[str, Container] = {}
        for row in db.query("SELECT doc FROM containers"):
            c = Container.from_doc(row["doc"])
            self._by_id[c.id] = c
            self._by_name[c.name] = c

    def all(self) -> list[Container]:
        """Every container, newest first."""
        return sorted(self._by_id.values(), key=lambda c: c.created, reverse=True)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, ref: str, visible: Callable[[Container], bool] | None = None) -> Container:
        """By full id, name (with or without ``/``) or unique id prefix; Docker's texts otherwise.

        With ``visible`` (owner isolation), the others are skipped as if absent: a prefix is unique or
        ambiguous among the visible containers only.
        """
        c = self._by_id.get(ref) or self._by_name.get(ref if ref.startswith("/") else "/" + ref)
        if c is not None and (visible is None or visible(c)):
            return c
        if ref:
            matches = [
                c for cid, c in self._by_id.items() if cid.startswith(ref) and (not visible or visible(c))
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def name_in_use(self, name: str) -> Container | None:
        """The container holding ``name``, if any."""
        return self._by_name.get(name)

    def add(self, c: Container) -> None:
        """Insert a new container (fails with Docker's conflict text when the name is taken)."""
        holder = self._by_name.get(c.name)
        if holder is not None:
            raise _name_conflict(c.name, holder.id)
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO containers(id, name, doc) VALUES (?, ?, ?)", (c.id, c.name, c.to_doc()))
        self._by_id[c.id] = c
        self._by_name[c.name] = c

    def save(self, c: Container) -> None:
        """Persist the container's current record."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE containers SET doc = ? WHERE id = ?", (c.to_doc(), c.id))

    def rename(self, c: Container, new_name: str) -> None:
        """Change the name atomically."""
        holder = self._by_name.get(new_name)
        if holder is not None:
            raise _name_conflict(new_name, holder.id)
        old = c.name
        c.name = new_name
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "UPDATE containers SET name = ?, doc = ? WHERE id = ?", (new_name, c.to_doc(), c.id)
                )
        except BaseException:
            c.name = old
            raise
        del self._by_name[old]
        self._by_name[new_name] = c

    def delete(self, c: Container) -> None:
        """Forget the container."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM containers WHERE id = ?", (c.id,))
        self._by_id.pop(c.id, None)
        if self._by_name.get(c.name) is c:
            del self._by_name[c.name]


def _name_conflict(name: str, holder: str) -> Conflict:
    return Conflict(
        f'Conflict. The container name "{name}" is already in use by container "{holder}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
