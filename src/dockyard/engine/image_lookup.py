"""Adapts the image use-cases to what the container use-cases need (:class:`ports.ImageLookup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dockyard.engine.images import ImageService


class ImageLookupAdapter:
    """``ImageLookup`` over :class:`ImageService`."""

    def __init__(self, images: ImageService) -> None:
        self._images = images

    def resolve_config(self, ref: str) -> tuple[str, dict[str, Any]]:
        """(image id, Config) of a reference."""
        record = self._images.resolve(ref)
        return record.id, self._images.image_config(record.id)

    def lower_dirs(self, image_id: str) -> list[Path]:
        """Layer directories, base first."""
        return self._images.layers(image_id)
