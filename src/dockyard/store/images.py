"""Image records: config blobs, the top layer of each image, and the tag and digest references.

An image's id is the sha256 of its config JSON (stored as a blob), so equal configs are one image.
References are stored fully qualified (``docker.io/library/busybox:latest``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dockyard.errors import InvalidParameter
from dockyard.store.blobs import BlobStore
from dockyard.store.db import Database

__all__ = ["ImageRecord", "ImageStore", "encode_config", "now_rfc3339"]

_SCHEMA = [
    """CREATE TABLE images (
        id TEXT PRIMARY KEY,
        top_layer TEXT REFERENCES layers(chain_id),
        size INTEGER NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        last_tag_time TEXT
    )""",
    """CREATE TABLE image_refs (
        ref TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        is_digest INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX image_refs_by_image ON image_refs(image_id)",
]


def now_rfc3339() -> str:
    """The current time as Docker prints it (RFC 3339, UTC, ``Z``)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def encode_config(config: dict[str, Any]) -> bytes:
    """The canonical bytes of an image config (compact JSON, stable key order)."""
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class ImageRecord:
    """One stored image."""

    id: str
    top_layer: str | None
    size: int
    parent: str
    last_tag_time: str | None


def _record(row: Any) -> ImageRecord:
    return ImageRecord(row["id"], row["top_layer"], row["size"], row["parent"], row["last_tag_time"])


class ImageStore:
    """Image rows, their config blobs and their references."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        """Register the image tables (after the layer store registered ``layers``)."""
        self._db = db
        self._blobs = blobs
        db.register_schema("images", _SCHEMA)

    def create(self, config_bytes: bytes, top_layer: str | None, size: int, parent: str = "") -> str:
        """Store an image (idempotent) and return its id."""
        image_id = self._blobs.put(config_bytes)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images(id, top_layer, size, parent) VALUES (?, ?, ?, ?)",
                (image_id, top_layer, size, parent),
            )
        return image_id

    def get(self, image_id: str) -> ImageRecord | None:
        """The image with this full id, if stored."""
        row = self._db.query_one("SELECT * FROM images WHERE id = ?", (image_id,))
        return _record(row) if row else None

    def search(self, prefix: str) -> list[ImageRecord]:
        """Images whose hex id starts with ``prefix``."""
        pattern = "sha256:" + prefix.removeprefix("sha256:").replace("%", "").replace("_", "") + "%"
        return [_record(r) for r in self._db.query("SELECT * FROM images WHERE id LIKE ?", (pattern,))]

    def all(self) -> list[ImageRecord]:
        """All images."""
        return [_record(r) for r in self._db.query("SELECT * FROM images")]

    def config(self, image_id: str) -> dict[str, Any]:
        """The parsed config blob of an image."""
        data = json.loads(self._blobs.get(image_id))
        if not isinstance(data, dict):
            raise InvalidParameter(f"image config {image_id} is not an object")
        return data

    def lookup(self, ref: str) -> str | None:
        """The image id a full reference points at."""
        row = self._db.query_one("SELECT image_id FROM image_refs WHERE ref = ?", (ref,))
        return row[0] if row else None

    def references(self, image_id: str) -> list[tuple[str, bool]]:
        """All ``(reference, is_digest)`` of an image, in the order they were added."""
        rows = self._db.query(
            "SELECT ref, is_digest FROM image_refs WHERE image_id = ? ORDER BY rowid", (image_id,)
        )
        return [(r[0], bool(r[1])) for r in rows]

    def add_reference(self, ref: str, image_id: str, is_digest: bool = False) -> None:
        """Point ``ref`` at ``image_id`` (moving it from another image if needed)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM image_refs WHERE ref = ?", (ref,))
            conn.execute(
                "INSERT INTO image_refs(ref, image_id, is_digest) VALUES (?, ?, ?)",
                (ref, image_id, int(is_digest)),
            )
            conn.execute("UPDATE images SET last_tag_time = ? WHERE id = ?", (now_rfc3339(), image_id))

    def remove_reference(self, ref: str) -> None:
        """Drop one reference."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM image_refs WHERE ref = ?", (ref,))

    def delete(self, image_id: str) -> None:
        """Delete an image row, its references and its config blob."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM image_refs WHERE image_id = ?", (image_id,))
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
        self._blobs.delete(image_id)

    def children(self, image_id: str) -> list[str]:
        """Ids of images whose parent is ``image_id``."""
        return [r[0] for r in self._db.query("SELECT id FROM images WHERE parent = ?", (image_id,))]
