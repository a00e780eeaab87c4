"""Image removal: ``DELETE /images/{name}`` (untag vs delete, which conflicts a ``force`` overrides) and
``POST /images/prune``.

The rules follow dockerd's ``daemon/images/image_delete.go``; containers are consulted through the service's
``ImageUsers``. Split from ``engine/images.py`` to keep each module small. Under owner isolation a confined
caller (``owner``) removes only the tags and images it created (``engine.image_owners``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from dockyard.engine.filters import Filters
from dockyard.engine.image_list import parse_time, summary_created
from dockyard.engine.image_owners import check_may_change
from dockyard.errors import Conflict
from dockyard.store.images import ImageRecord, ImageStore
from dockyard.store.layers import LayerStore
from dockyard.store.reference import parse_normalized

if TYPE_CHECKING:
    from dockyard.engine.images import ImageService

__all__ = ["DeleteItem", "ImageRemoval", "PruneReport", "is_hex"]


class DeleteItem(TypedDict, total=False):
    """One line of ``DELETE /images/{name}``."""

    Untagged: str
    Deleted: str


class PruneReport(TypedDict):
    """``POST /images/prune``."""

    ImagesDeleted: list[DeleteItem] | None
    SpaceReclaimed: int


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _familiar(ref: str) -> str:
    return parse_normalized(ref).familiar()


class ImageRemoval:
    """Removal and pruning over the image and layer stores, for :class:`ImageService`."""

    def __init__(self, service: ImageService, images: ImageStore, layers: LayerStore) -> None:
        self._service = service  # resolve, users and events (users and the bus are set after wiring)
        self._images = images
        self._layers = layers

    async def remove(self, ref: str, force: bool, owner: str | None) -> list[DeleteItem]:
        """``ImageService.remove``."""
        record = self._service.resolve(ref, owner)
        records: list[DeleteItem] = []
        quiet = False
        by_name = not _is_id_prefix(record.id, ref)
        named = str(parse_normalized(ref).with_default_tag()) if by_name else ""
        if owner is not None:
            check_may_change(self._ref_owner(named) if by_name else record.owner, owner, "remove", ref)
        if by_name:
            users = self._service.users.containers_using(record.id)
            if users and not force and _single_reference(self._images.references(record.id)):
                raise Conflict(
                    f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                    f"{users[0][0][:12]} is using its referenced image {_short(record.id)}"
                )
            self._untag(record.id, named, records)
            if self._images.references(record.id):
                return records
            quiet = True
        elif _single_repository(self._images.references(record.id)):
            self._check_conflict(record.id, hard_only=force, skip_refs=True)
            for named, _ in self._images.references(record.id):
                self._untag(record.id, named, records)
        await self._delete(record, records, force, quiet)
        return records

    def _ref_owner(self, named: str) -> str | None:
        hit = self._images.lookup_owned(named)
        return hit[1] if hit is not None else None

    def _untag(self, image_id: str, named: str, records: list[DeleteItem]) -> None:
        ref_owner = self._ref_owner(named)
        self._images.remove_reference(named)
        records.append({"Untagged": _familiar(named)})
        self._service.emit_event(image_id, "untag", owner=ref_owner)

    def _check_conflict(self, image_id: str, hard_only: bool, skip_refs: bool = False) -> None:
        users = self._service.users.containers_using(image_id)
        hard = "cannot be forced"
        if self._images.children(image_id):
            raise Conflict(
                f"conflict: unable to delete {_short(image_id)} ({hard}) - image has dependent child images"
            )
        for cid, running in users:
            if running:
                raise Conflict(
                    f"conflict: unable to delete {_short(image_id)} ({hard}) - "
                    f"image is being used by running container {cid[:12]}"
                )
        if hard_only:
            return
        soft = f"conflict: unable to delete {_short(image_id)} (must be forced) - "
        if not skip_refs and self._images.references(image_id):
            raise Conflict(soft + "image is referenced in multiple repositories")
        if users:
            raise Conflict(soft + f"image is being used by stopped container {users[0][0][:12]}")

    async def _delete(self, record: ImageRecord, records: list[DeleteItem], force: bool, quiet: bool) -> None:
        try:
            self._check_conflict(record.id, hard_only=force)
        except Conflict:
            if quiet:
                return
            raise
        for named, _ in self._images.references(record.id):
            self._untag(record.id, named, records)
        self._images.delete(record.id)
        records.append({"Deleted": record.id})
        self._service.emit_event(record.id, "delete", owner=record.owner)
        for chain in await self._release_layers(record.top_layer):
            records.append({"Deleted": chain})

    async def _release_layers(self, top: str | None) -> list[str]:
        if top is None:
            return []
        in_use: set[str] = set()
        for other in self._images.all():
            if other.top_layer:
                in_use.update(layer.chain_id for layer in self._layers.chain(other.top_layer))
        removed: list[str] = []
        for layer in reversed(self._layers.chain(top)):
            if layer.chain_id in in_use or self._layers.children(layer.chain_id):
                break
            await self._layers.remove(layer.chain_id)
            removed.append(layer.chain_id)
        return removed

    async def prune(self, filters: Filters, owner: str | None) -> PruneReport:
        """``ImageService.prune``."""
        filters.validate({"dangling", "label", "label!", "until"})
        dangling_only = filters.get_bool("dangling", True)
        until = [parse_time(v) for v in filters.get("until")]
        deleted: list[DeleteItem] = []
        reclaimed = 0
        for record in self._images.all():
            if owner is not None and not self._all_owned_by(record, owner):
                continue
            refs = self._images.references(record.id)
            if (dangling_only and refs) or self._service.users.containers_using(record.id):
                continue
            blob = self._images.config(record.id)
            labels = (blob.get("config") or {}).get("Labels") or {}
            if not filters.match_label(labels) or any(summary_created(blob) >= u for u in until):
                continue
            items: list[DeleteItem] = []
            try:
                if not refs:
                    await self._delete(record, items, force=False, quiet=False)
                for named, _ in refs:
                    items += await self.remove(named, False, None)
            except Conflict:
                continue
            deleted += items
            reclaimed += record.size
        self._service.events.emit("image", "prune", attributes={"reclaimed": str(reclaimed)})
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def _all_owned_by(self, record: ImageRecord, owner: str) -> bool:
        refs = self._images.reference_owners(record.id).values()
        return record.owner == owner and all(held == owner for held in refs)


def is_hex(text: str) -> bool:
    """Whether ``text`` is non-empty lowercase hex (an image id or a prefix of one, without ``sha256:``)."""
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _is_id_prefix(image_id: str, ref: str) -> bool:
    hex_id = image_id.removeprefix("sha256:")
    return is_hex(ref.removeprefix("sha256:")) and hex_id.startswith(ref.removeprefix("sha256:"))


def _single_reference(refs: list[tuple[str, bool]]) -> bool:
    """dockerd's ``isSingleReference``: removing this reference would leave the image untagged."""
    if len(refs) <= 1:
        return len(refs) == 1
    tags = [r for r, digest in refs if not digest]
    if len(tags) > 1:
        return False
    repos = {parse_normalized(r).name for r, digest in refs if digest}
    single = tags[0] if tags else refs[0][0]
    return len(repos) == 1 and parse_normalized(single).name in repos


def _single_repository(refs: list[tuple[str, bool]]) -> bool:
    tags = [r for r, digest in refs if not digest]
    repos = {parse_normalized(r).name for r, _ in refs}
    return len(tags) <= 1 and len(repos) <= 1
