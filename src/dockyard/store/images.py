"""Image records: config blobs, the top layer of each image, and the tag and digest references.

An image's id is the sha256 of its config JSON (stored as a blob), so equal configs are one image.
References are stored fully qualified (``docker.io/library/busybox:latest``).

Images and references may carry an *owner* (owner isolation: the ``dockyard.owner`` value of a confined
caller that created them). It is metadata kept here, never in the config: changing the config would change
the image id. ``None`` is unowned (seeded images, images made by unconfined callers).
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
    "ALTER TABLE images ADD COLUMN owner TEXT",
    "ALTER TABLE image_refs ADD COLUMN owner TEXT",
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
    owner: str | None = None  # who created it under owner isolation; None: unowned


def _record(row: Any) -> ImageRecord:
    return ImageRecord(
        row["id"], row["top_layer"], row["size"], row["parent"], row["last_tag_time"], row["owner"]
    )


class ImageStore:
    """Image rows, their config blobs and their references."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        """Register the image tables (after the layer store registered ``layers``)."""
        self._db = db
        self._blobs = blobs
        db.register_schema("images", _SCHEMA)

    def create(
        self,
        config_bytes: bytes,
        top_layer: str | None,
        size: int,
        parent: str = "",
        owner: str | None = None,
    ) -> str:
        """Store an image (idempotent) and return its id.

        ``owner`` is recorded only when the image is new: re-creating an existing image (same config) claims
        nothing, so a confined caller cannot take over an image somebody else made.
        """
        image_id = self._blobs.put(config_bytes)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images(id, top_layer, size, parent, owner) VALUES (?, ?, ?, ?, ?)",
                (image_id, top_layer, size, parent, owner),
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
        hit = self.lookup_owned(ref)
        return hit[0] if hit is not None else None

    def lookup_owned(self, ref: str) -> tuple[str, str | None] | None:
        """``(image id, owner)`` of a full reference, or None when no such reference exists."""
        row = self._db.query_one("SELECT image_id, owner FROM image_refs WHERE ref = ?", (ref,))
        return (row[0], row[1]) if row else None

    def references(self, image_id: str, viewer: str | None = None) -> list[tuple[str, bool]]:
        """All ``(reference, is_digest)`` of an image, in the order they were added.

        With ``viewer``, only the references that owner may see: its own and the unowned ones.
        """
        sql = "SELECT ref, is_digest FROM image_refs WHERE image_id = ?"
        params: tuple[str, ...] = (image_id,)
        if viewer is not None:
            sql, params = sql + " AND (owner IS NULL OR owner = ?)", (image_id, viewer)
        return [(r[0], bool(r[1])) for r in self._db.query(sql + " ORDER BY rowid", params)]

    def reference_owners(self, image_id: str) -> dict[str, str | None]:
        """Each reference of an image and its owner."""
        rows = self._db.query("SELECT ref, owner FROM image_refs WHERE image_id = ?", (image_id,))
        return {r[0]: r[1] for r in rows}

    def add_reference(
        self, ref: str, image_id: str, is_digest: bool = False, owner: str | None = None
    ) -> None:
        """Point ``ref`` at ``image_id`` (moving it from another image if needed), owned by ``owner``."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM image_refs WHERE ref = ?", (ref,))
            conn.execute(
                "INSERT INTO image_refs(ref, image_id, is_digest, owner) VALUES (?, ?, ?, ?)",
                (ref, image_id, int(is_digest), owner),
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
