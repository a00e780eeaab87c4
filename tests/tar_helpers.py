"""Helpers to build layer tars in memory, for the store's unit and integration tests."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from typing import Any

from dockyard.store.layers import Layer, LayerStore

Member = tuple[tarfile.TarInfo, bytes | None]


def member_info(name: str, kind: bytes = tarfile.REGTYPE, **kw: Any) -> tarfile.TarInfo:
    """A tar header for ``name`` (regular file unless ``kind`` says otherwise), with ``kw`` set on it."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def make_tar(*members: Member) -> bytes:
    """A tar archive of ``members``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def f(name: str, data: bytes = b"x", **kw: Any) -> Member:
    """A regular file member."""
    return member_info(name, **kw), data


def d(name: str, **kw: Any) -> Member:
    """A directory member."""
    return member_info(name, tarfile.DIRTYPE, **kw), None


def sym(name: str, target: str) -> Member:
    """A symbolic link member."""
    return member_info(name, tarfile.SYMTYPE, linkname=target), None


def hard(name: str, target: str) -> Member:
    """A hard link member."""
    return member_info(name, tarfile.LNKTYPE, linkname=target), None


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as an async stream of small chunks."""
    for i in range(0, len(data), 7000):
        yield data[i : i + 7000]


def imp(store: LayerStore, data: bytes, parent: str | None = None) -> Layer:
    """Import ``data`` as a layer synchronously."""
    return asyncio.run(store.import_stream(chunks(data), parent))
