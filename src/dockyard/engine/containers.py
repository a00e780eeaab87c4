"""Container use-cases: create, inspect, list, rename, remove, prune (the running side is in lifecycle)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from typing import Any

from dockyard.engine import state as st
from dockyard.engine import views
from dockyard.engine.container import Container, ContainerRepo, resolve_waiters
from dockyard.engine.create_config import command_of, merge_image_config, parse_create, validate_name
from dockyard.engine.filters import Filters
from dockyard.engine.lifecycle import Lifecycle, LifecycleDeps
from dockyard.engine.names import generate_name
from dockyard.errors import Conflict, DockyardError, InvalidParameter, NotFound, NotModified
from dockyard.store.rootfs import dir_size

LIST_FILTERS = {
    "id", "name", "label", "status", "ancestor", "exited", "before", "since", "network", "volume", "health",
    "is-task", "publish", "expose", "isolation",
}  # fmt: skip
PRUNE_FILTERS = {"until", "label", "label!"}


class ContainerService:
    """The container use-cases the API calls."""

    def __init__(self, deps: LifecycleDeps, runtime_name: str) -> None:
        self.d = deps
        self.repo: ContainerRepo = deps.repo
        self.runtime_name = runtime_name
        self.lifecycle = Lifecycle(deps, self._auto_remove)

    # -- create ---------------------------------------------------------------------------------------------
    def create(self, name: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create a container from a ``ContainerCreate`` body; returns ``{"Id", "Warnings"}``."""
        req = parse_create(body)
        full_name = (
            validate_name(name) if name else generate_name(lambda n: self.repo.name_in_use(n) is not None)
        )
        holder = self.repo.name_in_use(full_name)
        if holder is not None:
            raise Conflict(
                f'Conflict. The container name "{full_name}" is already in use by container "{holder.id}". '
                "You have to remove (or rename) that container to be able to reuse that name."
            )
        image_ref = req.config["Image"]
        image_id, image_config = self.d.images.resolve_config(image_ref)
        config = merge_image_config(req.config, image_config)
        if req.host_config.get("NetworkMode") == "host" and not config.get("Hostname"):
            config["Hostname"] = os.uname().nodename  # dockerd: a host-network container has the host's name
        path, args = command_of(config)
        c = Container(
            id=secrets.token_hex(32),
            name=full_name,
            created=time.time(),
            image=image_ref,
            image_id=image_id,
            config=config,
            host_config=req.host_config,
            path=path,
            args=args,
        )
        self.d.paths.dir(c.id).mkdir(parents=True, exist_ok=True)
        try:
            self.repo.add(c)
        except BaseException:
            shutil.rmtree(self.d.paths.dir(c.id), ignore_errors=True)
            raise
        c.live.stopped.set()
        self.d.events.container(c, "create")
        return {"Id": c.id, "Warnings": []}

    async def start(self, ref: str) -> None:
        """Start; a container that fails to start is removed when it asked for auto-remove (as dockerd does,
        and ``docker run --rm`` waits for that removal before reporting the error)."""
        try:
            await self.lifecycle.start(ref)
        except DockyardError as exc:
            if isinstance(exc, NotModified):
                raise
            c = self.repo.get(ref)
            if c.host_config.get("AutoRemove") and not c.state.running:
                await self._auto_remove(c)
            raise

    # -- queries --------------------------------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        """A container by id, name or prefix."""
        return self.repo.get(ref)

    def inspect(self, ref: str) -> dict[str, Any]:
        """``ContainerInspect``."""
        c = self.repo.get(ref)
        graph = {
            "Name": self.d.rootfs.driver,
            "Data": self.d.rootfs.graph_driver(c.id, self.d.images.lower_dirs(c.image_id))
            if _image_known(self.d, c)
            else {},
        }
        return views.inspect(c, self.d.paths, self.runtime_name, graph)

    def summaries(self, *, all: bool, limit: int | None, filters: Filters) -> list[dict[str, Any]]:
        """``docker ps`` rows, newest first."""
        filters.validate(LIST_FILTERS)
        # Docker: a limit (``ps -n``) lists stopped containers too.
        selected = [c for c in self.repo.all() if self._matches(c, filters, all or bool(limit and limit > 0))]
        selected = _before_since(selected, filters, self.repo)
        if limit is not None and limit > 0:
            selected = selected[:limit]
        now = time.time()
        return [views.summary(c, now) for c in selected]

    async def inspect_sized(self, ref: str) -> dict[str, Any]:
        """``ContainerInspect`` with ``size=1``: ``SizeRw`` and ``SizeRootFs`` filled in."""
        doc = self.inspect(ref)
        await self.sizes([doc])
        return doc

    async def sizes(self, rows: list[dict[str, Any]]) -> None:
        """Fill ``SizeRw``/``SizeRootFs`` (``size=1``), measured off the event loop."""
        image_sizes: dict[str, int] = {}
        for row in rows:
            with contextlib.suppress(DockyardError, OSError):
                row["SizeRw"] = await self.d.rootfs.rw_size(row["Id"])
                c = self.repo.get(row["Id"])
                if c.image_id not in image_sizes:
                    image_sizes[c.image_id] = await self._image_size(c)
                row["SizeRootFs"] = row["SizeRw"] + image_sizes[c.image_id]

    async def _image_size(self, c: Container) -> int:
        """The image's share of the root filesystem (vfs copies the image into the writable layer)."""
        if self.d.rootfs.driver != "overlay2" or not _image_known(self.d, c):
            return 0
        lowers = self.d.images.lower_dirs(c.image_id)
        return sum([await asyncio.to_thread(dir_size, p) for p in lowers])

    def _matches(self, c: Container, f: Filters, all: bool) -> bool:
        statuses = f.get("status")
        for value in statuses:
            if value not in st.STATUSES:
                raise InvalidParameter(f"invalid filter 'status={value}'")
        implicit_all = all or statuses or f.contains("exited")
        if not implicit_all and not c.state.running and c.state.status != st.RESTARTING:
            return False
        if statuses and c.state.status not in statuses:
            return False
        if f.contains("id") and not any(c.id.startswith(v) for v in f.get("id")):
            return False
        if f.contains("name") and not any(_name_matches(c.name, v) for v in f.get("name")):
            return False
        if f.contains("label") and not f.match_label(c.config.get("Labels") or {}):
            return False
        if f.contains("exited"):
            codes = _exit_codes(f.get("exited"))
            if c.state.status != st.EXITED or c.state.exit_code not in codes:
                return False
        if f.contains("ancestor") and not any(self._is_ancestor(c, v) for v in f.get("ancestor")):
            return False
        return _attachment_filters(c, f)

    def _is_ancestor(self, c: Container, ref: str) -> bool:
        if c.image == ref or c.image_id == ref or c.image_id.removeprefix("sha256:").startswith(ref):
            return True
        try:
            image_id, _ = self.d.images.resolve_config(ref)
        except NotFound:
            return False
        return image_id == c.image_id

    def containers_using(self, image_id: str) -> list[tuple[str, bool]]:
        """Containers made from an image, with whether each is running (for image removal)."""
        return [(c.id, c.state.running) for c in self.repo.all() if c.image_id == image_id]

    def counts(self, keep: Callable[[Container], bool] | None = None) -> dict[str, int]:
        """Containers by state, for ``/info`` (only those ``keep`` accepts, when given)."""
        out = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for c in self.repo.all():
            if keep is not None and not keep(c):
                continue
            out["total"] += 1
            key = {st.RUNNING: "running", st.PAUSED: "paused"}.get(c.state.status, "stopped")
            out[key] += 1
        return out

    # -- rename / remove / prune ---------------------------------------------------------------------------
    async def rename(self, ref: str, new_name: str) -> None:
        """Give the container another name."""
        if not new_name:
            raise InvalidParameter("Neither old nor new names may be empty")
        full = validate_name(new_name)
        c = self.repo.get(ref)
        async with c.live.lock:
            if c.name == full:
                raise InvalidParameter("Renaming a container with the same name as its current name")
            old = c.name
            self.repo.rename(c, full)
            self.d.events.container(c, "rename", oldName=old)

    async def remove(self, ref: str, *, force: bool, volumes: bool) -> None:
        """Delete a container (a running one only with force)."""
        c = self.repo.get(ref)
        async with c.live.lock:
            st.check_remove(c.name, c.state, force)
            await self.lifecycle.halt_locked(c)
            await self._remove_locked(c)

    async def _auto_remove(self, c: Container) -> None:
        async with c.live.lock:
            if self.repo.name_in_use(c.name) is c and not c.state.running:
                await self._remove_locked(c)

    async def _remove_locked(self, c: Container) -> None:
        c.state.status = st.REMOVING
        if self.d.paths.bundle(c.id).exists():  # the exit handler removes it with the runtime's state
            with contextlib.suppress(DockyardError):
                await self.d.runtime.delete(c.id)
            await asyncio.to_thread(shutil.rmtree, self.d.paths.bundle(c.id), True)
        await self.d.rootfs.remove(c.id)  # unmounts first
        self.repo.delete(c)
        self.d.events.container(c, "destroy")
        await asyncio.to_thread(shutil.rmtree, self.d.paths.dir(c.id), True)
        resolve_waiters(c.live.removed_waiters, c.state.exit_code)
        resolve_waiters(c.live.exit_waiters, c.state.exit_code)  # an exit that can no longer come

    async def prune(self, filters: Filters) -> dict[str, Any]:
        """Remove every stopped container matching the filters."""
        filters.validate(PRUNE_FILTERS)
        until = _until(filters)
        deleted: list[str] = []
        reclaimed = 0
        for c in self.repo.all():
            if c.state.running or c.state.status == st.RESTARTING:
                continue
            if until is not None and c.created >= until:
                continue
            if not filters.match_label(c.config.get("Labels") or {}):
                continue
            with contextlib.suppress(DockyardError, OSError):
                reclaimed += await self.d.rootfs.rw_size(c.id)
            try:
                await self.remove(c.id, force=False, volumes=False)
            except DockyardError:
                continue
            deleted.append(c.id)
        self.d.events.emit("container", "prune", attributes={"reclaimed": str(reclaimed)})
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _image_known(d: LifecycleDeps, c: Container) -> bool:
    try:
        d.images.lower_dirs(c.image_id)
    except DockyardError:
        return False
    return True


def _attachment_filters(c: Container, f: Filters) -> bool:
    """network, volume, publish, expose, health and is-task filters, with moby's matching rules."""
    mode = c.host_config.get("NetworkMode") or "default"
    if f.contains("network") and ("bridge" if mode == "default" else mode) not in f.get("network"):
        return False
    if f.contains("volume"):
        places = {p for m in views.mounts_doc(c) for p in (m["Source"], m["Destination"])}
        if not places & set(f.get("volume")):
            return False
    if f.contains("publish") and not _ports(f.get("publish")) & _ports(
        c.host_config.get("PortBindings") or {}
    ):
        return False
    if f.contains("expose") and not _ports(f.get("expose")) & _ports(c.config.get("ExposedPorts") or {}):
        return False
    for value in f.get("health"):
        if value not in ("starting", "healthy", "unhealthy", "none"):
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")
    if f.contains("health") and "none" not in f.get("health"):
        return False  # no container has a health check yet
    return not (f.contains("is-task") and f.get_bool("is-task"))


def _ports(specs: Any) -> set[str]:
    """``80``, ``80/tcp`` → ``80/tcp`` (Docker's default protocol)."""
    return {p if "/" in p else p + "/tcp" for p in specs}


def _name_matches(name: str, pattern: str) -> bool:
    """Docker matches ``name`` filters as a regular expression against the name."""
    import re

    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _exit_codes(values: list[str]) -> set[int]:
    try:
        return {int(v) for v in values}
    except ValueError:
        raise InvalidParameter(f"invalid filter 'exited={values[0]}'") from None


def _before_since(rows: list[Container], f: Filters, repo: ContainerRepo) -> list[Container]:
    if f.contains("before"):
        pivot = repo.get(f.get("before")[0])
        rows = [c for c in rows if c.created < pivot.created]
    if f.contains("since"):
        pivot = repo.get(f.get("since")[0])
        rows = [c for c in rows if c.created > pivot.created]
    return rows


def _until(f: Filters) -> float | None:
    from dockyard.logs.timestamps import parse_docker_time

    values = f.get("until")
    if not values:
        return None
    return parse_docker_time(values[0], time.time_ns()) / 1e9
