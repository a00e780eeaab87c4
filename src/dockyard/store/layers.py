"""Layer storage: ``<data-root>/layers/<chain-hex>/diff`` plus one ``layers`` row per layer.

A layer is identified by its chain id (sha256 over its parent's chain id and its own diff id, as in
the OCI image spec), so the same diff on different parents is stored separately, as overlayfs needs.
Imports spool the incoming stream to a file under ``<data-root>/tmp`` (disk, not memory, bounds
size), then extract in a worker thread into a staging directory that is renamed into place.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import NotFound
from dockyard.store.db import Database
from dockyard.store.tarsafe import ExtractResult, extract_layer

__all__ = ["Layer", "LayerStore", "chain_id"]

_SCHEMA = [
    """CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT REFERENCES layers(chain_id),
        size INTEGER NOT NULL
    )""",
]


def chain_id(parent: str | None, diff_id: str) -> str:
    """The OCI chain id of ``diff_id`` on top of the layer ``parent`` (a chain id)."""
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


@dataclass(frozen=True)
class Layer:
    """One stored layer."""

    chain_id: str
    diff_id: str
    parent: str | None
    size: int


class LayerStore:
    """Extracted layers and their metadata."""

    def __init__(self, root: Path, db: Database) -> None:
        """Use ``root`` (the data root) and register the ``layers`` table."""
        self._dir = root / "layers"
        self._tmp = root / "tmp"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._db = db
        db.register_schema("layers", _SCHEMA)

    def diff_dir(self, chain: str) -> Path:
        """The directory holding the extracted layer ``chain``."""
        return self._dir / chain.removeprefix("sha256:") / "diff"

    def get(self, chain: str) -> Layer:
        """Look a layer up by chain id.

        Raises:
            NotFound: unknown layer.
        """
        row = self._db.query_one("SELECT * FROM layers WHERE chain_id = ?", (chain,))
        if row is None:
            raise NotFound(f"layer {chain} not found")
        return Layer(row["chain_id"], row["diff_id"], row["parent"], row["size"])

    def chain(self, top: str) -> list[Layer]:
        """The layers from the base up to and including ``top``."""
        layers: list[Layer] = []
        current: str | None = top
        while current is not None:
            layer = self.get(current)
            layers.append(layer)
            current = layer.parent
        return layers[::-1]

    async def import_stream(self, stream: AsyncIterator[bytes], parent: str | None = None) -> Layer:
        """Import a layer tar (plain or gzip/bzip2/xz) arriving as byte chunks.

        Args:
            stream: the archive bytes.
            parent: chain id of the layer below, if any.

        Returns:
            The stored layer (an existing one when the same content is already stored).
        """
        with tempfile.NamedTemporaryFile(dir=self._tmp, prefix="spool-") as spool:
            # Why inline: a write into the page cache costs microseconds; the heavy work is extraction.
            async for chunk in stream:
                spool.write(chunk)
            spool.flush()
            return await self.import_file(Path(spool.name), parent)

    async def import_file(self, path: Path, parent: str | None = None) -> Layer:
        """Import a layer tar stored in ``path`` (see ``import_stream``)."""
        if parent is not None:
            self.get(parent)
        staging = Path(tempfile.mkdtemp(dir=self._tmp, prefix="layer-"))
        try:
            result = await asyncio.to_thread(_extract_path, path, staging)
            chain = chain_id(parent, result.diff_id)
            with self._db.transaction() as conn:
                if conn.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone():
                    return self.get(chain)
                target = self.diff_dir(chain)
                if target.exists():
                    await asyncio.to_thread(shutil.rmtree, target.parent)
                target.parent.mkdir(parents=True)
                staging.rename(target)
                conn.execute(
                    "INSERT INTO layers(chain_id, diff_id, parent, size) VALUES (?, ?, ?, ?)",
                    (chain, result.diff_id, parent, result.size),
                )
            return Layer(chain, result.diff_id, parent, result.size)
        finally:
            if staging.exists():
                await asyncio.to_thread(shutil.rmtree, staging)

    def children(self, chain: str) -> list[str]:
        """Chain ids of the layers stored directly on top of ``chain``."""
        return [r[0] for r in self._db.query("SELECT chain_id FROM layers WHERE parent = ?", (chain,))]

    async def remove(self, chain: str) -> None:
        """Delete a layer's row and files; the caller ensures nothing references it."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM layers WHERE chain_id = ?", (chain,))
        await asyncio.to_thread(shutil.rmtree, self._dir / chain.removeprefix("sha256:"), True)


def _extract_path(path: Path, dest: Path) -> ExtractResult:
    with path.open("rb") as raw:
        return extract_layer(raw, str(dest))
