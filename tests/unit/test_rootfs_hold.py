"""A container's filesystem stays mounted for its readers (archive, export) when the container exits."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dockyard.store.rootfs import Rootfs
from dockyard.store.syscalls import unmount

pytestmark = pytest.mark.root


@pytest.fixture
def rootfs(tmp_path: Path) -> Rootfs:
    if os.geteuid() != 0:
        pytest.skip("overlay mounts need root")
    return Rootfs(tmp_path / "root", "overlay2")


def _layer(tmp_path: Path) -> Path:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "greeting").write_text("hello")
    return layer


def test_an_exit_leaves_a_held_filesystem_mounted_until_its_reader_lets_go(
    rootfs: Rootfs, tmp_path: Path
) -> None:
    path = asyncio.run(rootfs.mount_rootfs("c1", [_layer(tmp_path)]))
    try:
        rootfs.hold("c1")
        rootfs.hold("c1")
        asyncio.run(rootfs.unmount("c1", unless_held=True))  # the container's exit
        assert os.path.ismount(path) and (path / "greeting").read_text() == "hello"
        assert rootfs.let_go("c1") == 1
        asyncio.run(rootfs.unmount("c1", unless_held=True))
        assert os.path.ismount(path)
        assert rootfs.let_go("c1") == 0
        asyncio.run(rootfs.unmount("c1", unless_held=True))
        assert not os.path.ismount(path)
    finally:
        if os.path.ismount(path):
            unmount(path)


def test_an_unconditional_unmount_and_other_containers_ignore_the_count(
    rootfs: Rootfs, tmp_path: Path
) -> None:
    layer = _layer(tmp_path)
    one = asyncio.run(rootfs.mount_rootfs("c1", [layer]))
    two = asyncio.run(rootfs.mount_rootfs("c2", [layer]))
    try:
        rootfs.hold("c1")
        asyncio.run(rootfs.unmount("c2", unless_held=True))
        assert os.path.ismount(one) and not os.path.ismount(two)
        asyncio.run(rootfs.unmount("c1"))  # removal: not held back
        assert not os.path.ismount(one)
        assert rootfs.let_go("c1") == 0 and rootfs.let_go("c1") == 0  # never below zero
    finally:
        for p in (one, two):
            if os.path.ismount(p):
                unmount(p)
