"""Image use-cases: import, list, inspect, tag, remove, prune, and what the container engine needs.

Return values are plain TypedDicts in the wire shape of API v1.47, so routers only serialize them.
The removal rules (untag vs delete, which conflicts a ``force`` overrides) follow dockerd's
``daemon/images/image_delete.go``; containers are consulted through the ``ImageUsers`` protocol.
"""

from __future__ import annotations

import platform as host_platform
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NotRequired, Protocol, TypedDict

from dockyard.engine.changes import apply_changes
from dockyard.engine.events import EventBus
from dockyard.engine.filters import Filters
from dockyard.engine.image_list import ImageSummary, list_summaries, parse_time, summary_created
from dockyard.engine.image_owners import check_may_change, event_labels, may_see, may_see_ref
from dockyard.errors import Conflict, Forbidden, InvalidParameter, NotFound, Unsupported
from dockyard.store.images import ImageRecord, ImageStore, encode_config, now_rfc3339
from dockyard.store.layers import Layer, LayerStore
from dockyard.store.reference import is_full_id, parse_normalized, parse_repo_tag

__all__ = ["DeleteItem", "ImageInspect", "ImageService", "ImageSummary", "ImageUsers", "PruneReport"]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}


class ImageUsers(Protocol):
    """What the image use-cases ask the container engine."""

    def containers_using(self, image_id: str) -> list[tuple[str, bool]]:
        """``(container_id, running)`` for every container created from ``image_id``."""
        ...


class _NoUsers:
    def containers_using(self, image_id: str) -> list[tuple[str, bool]]:
        return []


class GraphDriver(TypedDict):
    Name: str
    Data: dict[str, str]


class RootFS(TypedDict):
    Type: str
    Layers: list[str]


class ImageMetadata(TypedDict):
    LastTagTime: str


class ImageInspect(TypedDict):
    """``GET /images/{name}/json``."""

    Id: str
    RepoTags: list[str]
    RepoDigests: list[str]
    Parent: str
    Comment: str
    Created: str
    DockerVersion: str
    Author: str
    Config: dict[str, Any]
    Architecture: str
    Variant: NotRequired[str]
    Os: str
    Size: int
    GraphDriver: GraphDriver
    RootFS: RootFS
    Metadata: ImageMetadata


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


class ImageService:
    """The image use-cases."""

    def __init__(
        self, images: ImageStore, layers: LayerStore, driver: str, users: ImageUsers | None = None
    ) -> None:
        """Wire the stores; ``driver`` names the storage driver shown in ``GraphDriver``."""
        self._images = images
        self._layers = layers
        self._driver = driver
        self.users: ImageUsers = users or _NoUsers()
        self.events = EventBus()  # the daemon's shared bus is set by the composition root

    def _event(self, image_id: str, action: str, name: str = "", owner: str | None = None) -> None:
        """An image event with dockerd's attributes: the image's labels while it exists, and ``name``.

        ``owner`` (the tag's creator, say), else the image's recorded owner, is given as the
        ``dockyard.owner`` label, so a confined caller's event stream shows its own images' events.
        """
        record = self._images.get(image_id)
        labels = (self._images.config(image_id).get("config") or {}).get("Labels") if record else None
        owner = owner or (record.owner if record else None)
        self.events.image(image_id, action, name or image_id, event_labels(labels, owner))

    # -- lookups -------------------------------------------------------------------------------

    def resolve(self, ref: str, viewer: str | None = None) -> ImageRecord:
        """Find an image by name[:tag], name@digest, full id or id prefix.

        With ``viewer`` (a confined caller's owner), among what it may see only: others' images and tags
        are skipped as if absent, so an id prefix is unique or ambiguous within the caller's images.

        Raises:
            NotFound: ``No such image: <ref>``.
            InvalidParameter: ``ref`` is malformed.
        """
        found = self._by_id(ref) if is_full_id(ref) else None
        if found is not None and may_see(found, viewer):
            return found
        try:
            parsed = parse_normalized(ref)
        except InvalidParameter:
            if is_full_id(ref):
                raise NotFound(f"No such image: {ref}") from None
            raise
        named = parsed.with_default_tag()
        hit = self._images.lookup_owned(str(named))
        if hit is not None and may_see_ref(hit[1], viewer):
            record = self._by_id(hit[0]) or self._missing(named.familiar())
            if may_see(record, viewer):
                return record
        if _is_hex(ref.removeprefix("sha256:")):
            matches = [m for m in self._images.search(ref) if may_see(m, viewer)]
            if len(matches) == 1:
                return matches[0]
        return self._missing(named.familiar())

    def _missing(self, ref: str) -> ImageRecord:
        raise NotFound(f"No such image: {ref}")

    def _by_id(self, ref: str) -> ImageRecord | None:
        image_id = ref if ref.startswith("sha256:") else "sha256:" + ref
        return self._images.get(image_id)

    def image_config(self, image_id: str) -> dict[str, Any]:
        """The image's ``Config`` (Cmd, Entrypoint, Env, WorkingDir, User, Labels, StopSignal, ...)."""
        config = self._images.config(image_id).get("config") or {}
        return {**_CONFIG_DEFAULTS, **config}

    def layer_chain(self, image_id: str) -> list[Layer]:
        """The image's layers, base first."""
        record = self._images.get(image_id)
        if record is None:
            raise NotFound(f"No such image: {image_id}")
        return self._layers.chain(record.top_layer) if record.top_layer else []

    def layers(self, image_id: str) -> list[Path]:
        """The image's layer diff directories, base first (for mounting a rootfs)."""
        return [self._layers.diff_dir(layer.chain_id) for layer in self.layer_chain(image_id)]

    # -- import / create -------------------------------------------------------------------------

    async def import_image(
        self,
        stream: AsyncIterator[bytes],
        repo: str | None = None,
        tag: str | None = None,
        changes: list[str] | None = None,
        message: str | None = None,
        platform: str | None = None,
        owner: str | None = None,
    ) -> str:
        """``POST /images/create?fromSrc=-``: a root filesystem tar becomes a one-layer image.

        ``owner`` (a confined caller's) is recorded as the image's and the tag's owner.

        Returns:
            The new image's id.

        Raises:
            Forbidden: a confined caller names a tag it did not create (checked before reading the data).
        """
        target = parse_repo_tag(repo, tag) if repo else None
        if target is not None:
            self._check_retag(str(target), owner)
        config = apply_changes({}, changes or [])
        os_name, arch = _platform(platform)
        layer = await self._layers.import_stream(stream)
        image_id = self.create_image(
            layer, config, comment=message or "Imported from -", os_name=os_name, arch=arch,
            refs=[str(target)] if target else [], owner=owner,
        )  # fmt: skip
        self._event(image_id, "import")
        return image_id

    def create_image(
        self,
        top: Layer | None,
        config: dict[str, Any],
        *,
        comment: str = "",
        author: str = "",
        parent: str = "",
        os_name: str = "linux",
        arch: str | None = None,
        refs: list[str] | None = None,
        owner: str | None = None,
    ) -> str:
        """Record an image whose filesystem is ``top`` and its parents (import, commit, build).

        Args:
            top: the top layer, or ``None`` for an image without layers.
            config: the ``Config`` section.
            comment: history comment.
            author: image author.
            parent: parent image id (commit), or empty.
            os_name: image OS.
            arch: image architecture; the host's by default.
            refs: full references to point at the image.
            owner: the confined caller creating it (owner isolation), or None.

        Returns:
            The image id.
        """
        chain = self._layers.chain(top.chain_id) if top else []
        created = now_rfc3339()
        blob: dict[str, Any] = {
            "architecture": arch or _ARCH.get(host_platform.machine(), host_platform.machine()),
            "os": os_name,
            "created": created,
            "author": author,
            "comment": comment,
            "config": {k: v for k, v in config.items() if v is not None},
            "history": [{"created": created, "comment": comment}],
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in chain]},
        }
        size = sum(layer.size for layer in chain)
        image_id = self._images.create(
            encode_config(blob), top.chain_id if top else None, size, parent, owner
        )
        for ref in refs or []:
            self._images.add_reference(ref, image_id, owner=owner)
        return image_id

    # -- queries -----------------------------------------------------------------------------------

    def inspect(self, ref: str, viewer: str | None = None) -> ImageInspect:
        """``GET /images/{name}/json``; a confined caller (``viewer``) sees only the tags it may see."""
        record = self.resolve(ref, viewer)
        blob = self._images.config(record.id)
        refs = self._images.references(record.id, viewer)
        result: ImageInspect = {
            "Id": record.id,
            "RepoTags": [_familiar(r) for r, digest in refs if not digest],
            "RepoDigests": [_familiar(r) for r, digest in refs if digest],
            "Parent": record.parent,
            "Comment": blob.get("comment", ""),
            "Created": blob.get("created", ""),
            "DockerVersion": blob.get("docker_version", ""),
            "Author": blob.get("author", ""),
            "Config": self.image_config(record.id),
            "Architecture": blob.get("architecture", ""),
            "Os": blob.get("os", ""),
            "Size": record.size,
            "GraphDriver": {"Name": self._driver, "Data": self._graph_data(record)},
            "RootFS": {"Type": "layers", "Layers": list(blob.get("rootfs", {}).get("diff_ids", []))},
            "Metadata": {"LastTagTime": record.last_tag_time or "0001-01-01T00:00:00Z"},
        }
        if blob.get("variant"):
            result["Variant"] = blob["variant"]
        return result

    def _graph_data(self, record: ImageRecord) -> dict[str, str]:
        dirs = self.layers(record.id)
        if self._driver != "overlay2" or not dirs:
            return {}
        data = {"MergedDir": str(dirs[-1].parent / "merged"), "UpperDir": str(dirs[-1])}
        data["WorkDir"] = str(dirs[-1].parent / "work")
        if len(dirs) > 1:
            data["LowerDir"] = ":".join(str(d) for d in reversed(dirs[:-1]))
        return data

    def list_images(
        self,
        filters: Filters | None = None,
        all: bool = False,
        digests: bool = False,
        viewer: str | None = None,
    ) -> list[ImageSummary]:
        """``GET /images/json``: ImageSummary dicts, newest first.

        Args:
            filters: before, since, dangling, label, label!, reference, until.
            all: also show intermediate images (those with children).
            digests: accepted for compatibility; ``RepoDigests`` is always filled.
            viewer: a confined caller: only its own and unowned images and tags are listed.
        """
        return list_summaries(self, self._images, filters or Filters(), all, viewer)

    def tag(self, ref: str, repo: str, tag: str | None = None, owner: str | None = None) -> None:
        """``POST /images/{name}/tag``; a confined caller (``owner``) tags what it sees, and owns the tag.

        Raises:
            Forbidden: a confined caller would move a tag it did not create.
        """
        record = self.resolve(ref, owner)
        target = parse_repo_tag(repo, tag)
        self._check_retag(str(target), owner)
        self._images.add_reference(str(target), record.id, owner=owner)
        self._event(record.id, "tag", target.familiar(), owner)

    def _check_retag(self, target: str, owner: str | None) -> None:
        """A confined caller may point a tag it created, or a new one, but not move anybody else's."""
        current = self._images.lookup_owned(target)
        if current is not None:
            check_may_change(current[1], owner, "tag", _familiar(target))

    def _untag(self, image_id: str, named: str, records: list[DeleteItem]) -> None:
        ref_owner = self._images.reference_owners(image_id).get(named)
        self._images.remove_reference(named)
        records.append({"Untagged": _familiar(named)})
        self._event(image_id, "untag", owner=ref_owner)

    # -- removal -----------------------------------------------------------------------------------

    async def remove(
        self, ref: str, force: bool = False, noprune: bool = False, owner: str | None = None
    ) -> list[DeleteItem]:
        """``DELETE /images/{name}``: untag, and delete the image once nothing references it.

        A confined caller (``owner``) removes only the tags and images it created.

        Raises:
            NotFound: unknown image (or one the confined caller cannot see).
            Forbidden: a confined caller names a shared or another owner's tag or image.
            Conflict: the image is in use or referenced in several repositories.
        """
        record = self.resolve(ref, owner)
        records: list[DeleteItem] = []
        quiet = False
        by_name = not _is_id_prefix(record.id, ref)
        if owner is not None:
            named = str(parse_normalized(ref).with_default_tag()) if by_name else ""
            held = self._images.reference_owners(record.id).get(named) if by_name else record.owner
            check_may_change(held, owner, "remove", ref)
        if by_name:
            users = self.users.containers_using(record.id)
            if users and not force and _single_reference(self._images.references(record.id)):
                raise Conflict(
                    f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                    f"{users[0][0][:12]} is using its referenced image {_short(record.id)}"
                )
            named = str(parse_normalized(ref).with_default_tag())
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

    def _check_conflict(self, image_id: str, hard_only: bool, skip_refs: bool = False) -> None:
        users = self.users.containers_using(image_id)
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
        self._event(record.id, "delete", owner=record.owner)
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

    async def prune(self, filters: Filters | None = None, owner: str | None = None) -> PruneReport:
        """``POST /images/prune``: delete dangling (or, with ``dangling=false``, all unused) images.

        A confined caller (``owner``) prunes only images it created and whose tags are all its own.
        """
        filters = filters or Filters()
        filters.validate({"dangling", "label", "label!", "until"})
        dangling_only = filters.get_bool("dangling", True)
        until = [parse_time(v) for v in filters.get("until")]
        deleted: list[DeleteItem] = []
        reclaimed = 0
        for record in self._images.all():
            if owner is not None and not self._all_owned_by(record, owner):
                continue
            refs = self._images.references(record.id)
            if (dangling_only and refs) or self.users.containers_using(record.id):
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
                    items += await self.remove(named)
            except (Conflict, Forbidden):
                continue
            deleted += items
            reclaimed += record.size
        self.events.emit("image", "prune", attributes={"reclaimed": str(reclaimed)})
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def _all_owned_by(self, record: ImageRecord, owner: str) -> bool:
        refs = self._images.reference_owners(record.id).values()
        return record.owner == owner and all(held == owner for held in refs)


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _is_id_prefix(image_id: str, ref: str) -> bool:
    hex_id = image_id.removeprefix("sha256:")
    return _is_hex(ref.removeprefix("sha256:")) and hex_id.startswith(ref.removeprefix("sha256:"))


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


def _platform(text: str | None) -> tuple[str, str | None]:
    if not text:
        return "linux", None
    parts = text.split("/")
    if parts[0] != "linux":
        raise Unsupported(f'operating system is not supported: "{parts[0]}"')
    return "linux", (parts[1] if len(parts) > 1 else None)
