"""The engine's objects as one owner sees them (owner isolation, ``own_objects_only``).

The authorization stage asks here before a confined caller's request reaches a handler: a reference is
resolved over the objects the caller may see (its containers; its own and the unowned images), with the
engine's own lookup rules and texts, so others' objects answer exactly as missing ones do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dockyard.engine.container import Container, ContainerRepo
from dockyard.engine.exec import ExecService
from dockyard.engine.images import ImageService
from dockyard.errors import DockyardError, NotFound
from dockyard.security.policy import OWNER_LABEL

__all__ = ["OwnedView", "owned_by"]


def owned_by(owner: str) -> Callable[[Container], bool]:
    """A predicate: the container carries ``owner``'s label."""
    return lambda c: (c.config.get("Labels") or {}).get(OWNER_LABEL) == owner


class OwnedView:
    """``api.middleware.authz.OwnedObjects`` over the engine."""

    def __init__(self, containers: ContainerRepo, execs: ExecService, images: ImageService) -> None:
        self._containers = containers
        self._execs = execs
        self._images = images

    def container(self, ref: str, owner: str) -> str:
        """``ref``, or the full id of the caller's container when the global lookup finds another.

        Raises:
            NotFound: no such container among the caller's.
            InvalidParameter: the prefix is ambiguous among the caller's containers.
        """
        mine = self._containers.get(ref, owned_by(owner))
        return ref if _same(lambda: self._containers.get(ref).id, mine.id) else mine.id

    def exec(self, ref: str, owner: str) -> None:
        """Refuse an exec whose container is another owner's (an unknown exec is the engine's to answer).

        Raises:
            NotFound: ``No such exec instance: <ref>``.
        """
        try:
            container = self._containers.get(self._execs.get(ref).container_id)
        except NotFound:
            return
        if not owned_by(owner)(container):
            raise NotFound(f"No such exec instance: {ref}")

    def image(self, ref: str, owner: str) -> str:
        """``ref``, or the full id of the image it names for the caller when the global lookup differs.

        Raises:
            NotFound: ``No such image: <ref>`` (missing, or another owner's).
            InvalidParameter: a malformed reference.
        """
        mine = self._images.resolve(ref, owner)
        return ref if _same(lambda: self._images.resolve(ref).id, mine.id) else mine.id

    def name_holder(self, name: str) -> Mapping[str, str] | None:
        """The labels of the container holding ``name`` (with its ``/``), or None when it is free."""
        holder = self._containers.name_in_use(name)
        return None if holder is None else (holder.config.get("Labels") or {})


def _same(global_lookup: Callable[[], str], mine: str) -> bool:
    try:
        return global_lookup() == mine
    except DockyardError:
        return False
