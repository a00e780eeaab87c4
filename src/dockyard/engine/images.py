"""Image use-cases: import, list, inspect, tag, remove, prune, and what the container engine needs.

Return values are plain TypedDicts in the wire shape of API v1.47, so routers only serialize them.
Removal and pruning live in ``engine/image_remove.py`` (dockerd's ``image_delete.go`` rules); containers
are consulted through the ``ImageUsers`` protocol. Owner isolation: ``viewer``/``owner`` arguments are a
confined caller's ``dockyard.owner`` value (``engine/image_owners.py``); None is an unconfined caller.
"""

from __future__ import annotations

import platform as host_platform
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NotRequired, Protocol, TypedDict

from dockyard.engine.changes import apply_changes
from dockyard.engine.events import EventBus
from dockyard.engine.filters import Filters
from dockyard.engine.image_list import ImageSummary, list_summaries
from dockyard.engine.image_owners import check_may_change, event_labels, may_see, may_see_ref
from dockyard.engine.image_remove import DeleteItem, ImageRemoval, PruneReport, is_hex
from dockyard.errors import InvalidParameter, NotFound, Unsupported
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
        self._removal = ImageRemoval(self, images, layers)

    def emit_event(self, image_id: str, action: str, name: str = "", owner: str | None = None) -> None:
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
        if is_hex(ref.removeprefix("sha256:")):
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
        self.emit_event(image_id, "import")
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
        self.emit_event(record.id, "tag", target.familiar(), owner)

    def _check_retag(self, target: str, owner: str | None) -> None:
        """A confined caller may point a tag it created, or a new one, but not move anybody else's."""
        current = self._images.lookup_owned(target)
        if current is not None:
            check_may_change(current[1], owner, "tag", _familiar(target))

    # -- removal (engine/image_remove.py) ------------------------------------------------------------

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
        return await self._removal.remove(ref, force, owner)

    async def prune(self, filters: Filters | None = None, owner: str | None = None) -> PruneReport:
        """``POST /images/prune``: delete dangling (or, with ``dangling=false``, all unused) images.

        A confined caller (``owner``) prunes only images it created and whose tags are all its own.
        """
        return await self._removal.prune(filters or Filters(), owner)


def _platform(text: str | None) -> tuple[str, str | None]:
    if not text:
        return "linux", None
    parts = text.split("/")
    if parts[0] != "linux":
        raise Unsupported(f'operating system is not supported: "{parts[0]}"')
    return "linux", (parts[1] if len(parts) > 1 else None)
