"""What the container use-cases need from the image store and the rootfs driver (engine-side contracts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class ImageLookup(Protocol):
    """Images as the container use-cases see them."""

    def resolve_config(self, ref: str) -> tuple[str, dict[str, Any]]:
        """(image id, image Config) for a reference or id; ``NotFound("No such image: ref")`` otherwise."""
        ...

    def lower_dirs(self, image_id: str) -> list[Path]:
        """The image's layer directories, base layer first."""
        ...


class RootfsDriver(Protocol):
    """Per-container root filesystems."""

    driver: str

    async def mount_rootfs(self, container_id: str, lower_dirs: list[Path]) -> Path:
        """Mount (creating on first use) and return the rootfs path."""
        ...

    async def unmount(self, container_id: str, unless_held: bool = False) -> None:
        """Unmount (with ``unless_held``: not while a reader holds it); the writable layer is kept."""
        ...

    def hold(self, container_id: str) -> None:
        """Count a reader of the filesystem besides the container (before mounting it for the reader)."""
        ...

    def let_go(self, container_id: str) -> int:
        """Count a reader less; how many are left."""
        ...

    async def remove(self, container_id: str) -> None:
        """Delete the writable layer."""
        ...

    async def rw_size(self, container_id: str) -> int:
        """Bytes in the writable layer."""
        ...

    def graph_driver(self, container_id: str, lower_dirs: list[Path]) -> dict[str, str]:
        """``GraphDriver.Data`` for inspect."""
        ...
