"""Content-addressable blobs: ``<data-root>/blobs/sha256/<hex>``.

Writes go to a temporary file in the same directory, are fsynced, digest-checked and renamed into
place, so a crash leaves either the whole blob or nothing. Blobs are small (image configs,
manifests), so the API takes and returns bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from dockyard.errors import InvalidParameter, NotFound

__all__ = ["BlobStore", "sha256_digest"]

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def sha256_digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs addressed by their sha256 digest."""

    def __init__(self, root: Path) -> None:
        """Use ``root`` (``<data-root>/blobs``), creating it if needed."""
        self._dir = root / "sha256"
        self._dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """The file holding ``digest``.

        Raises:
            InvalidParameter: ``digest`` is not a sha256 digest.
        """
        if not _DIGEST_RE.match(digest):
            raise InvalidParameter(f"invalid digest: {digest}")
        return self._dir / digest.removeprefix("sha256:")

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored."""
        return self.path(digest).exists()

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data`` durably and return its digest.

        Args:
            data: the content.
            expected: when given, the digest the content must have.

        Raises:
            InvalidParameter: the content does not match ``expected``.
        """
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise InvalidParameter(f"digest mismatch: expected {expected}, got {digest}")
        target = self.path(digest)
        if target.exists():
            return digest
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """Read a blob, verifying its content.

        Raises:
            NotFound: the blob is not stored.
            InvalidParameter: the stored content is corrupt.
        """
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} not found") from exc
        if sha256_digest(data) != digest:
            raise InvalidParameter(f"blob {digest} is corrupt")
        return data

    def delete(self, digest: str) -> None:
        """Remove a blob; absent blobs are ignored."""
        self.path(digest).unlink(missing_ok=True)
