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

    async def unmount(self, container_id: str) -> None:
        """Unmount; the writable layer is kept."""
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
