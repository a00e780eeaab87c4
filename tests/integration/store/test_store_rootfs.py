"""Root-only tests: container root filesystems over real layers (overlay2 and vfs)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dockyard.store.db import Database
from dockyard.store.layers import LayerStore
from dockyard.store.rootfs import Rootfs, detect_driver
from tests.tar_helpers import d, f, imp, make_tar

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def _layers(root: Path) -> list[Path]:
    store = LayerStore(root, Database(root / "d.db"))
    base = imp(store, make_tar(d("etc"), f("etc/base", b"base"), f("etc/gone", b"x"), d("opq"), f("opq/old")))
    top = imp(
        store,
        make_tar(
            f("etc/top", b"top"), f("etc/.wh.gone", b""), d("opq"), f("opq/.wh..wh..opq", b""), f("opq/new")
        ),
        base.chain_id,
    )
    return [store.diff_dir(base.chain_id), store.diff_dir(top.chain_id)]


def test_detect_driver(tmp_path: Path) -> None:
    assert asyncio.run(detect_driver(tmp_path)) in ("overlay2", "vfs")
    assert not (tmp_path / "tmp" / "overlay-probe").exists()


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_mount_write_copy_on_write(tmp_path: Path, driver: str) -> None:
    if driver == "overlay2" and asyncio.run(detect_driver(tmp_path)) != "overlay2":
        pytest.skip("overlay not usable here")
    lowers = _layers(tmp_path)
    rootfs = Rootfs(tmp_path, driver)

    async def scenario() -> None:
        path = await rootfs.mount_rootfs("c1", lowers)
        assert await rootfs.mount_rootfs("c1", lowers) == path
        assert (path / "etc/base").read_bytes() == b"base"
        assert (path / "etc/top").read_bytes() == b"top"
        assert not (path / "etc/gone").exists()
        assert sorted(os.listdir(path / "opq")) == ["new"]
        (path / "etc/base").write_bytes(b"changed!")
        assert (lowers[0] / "etc/base").read_bytes() == b"base"
        other = await rootfs.mount_rootfs("c2", lowers)
        assert (other / "etc/base").read_bytes() == b"base"
        if driver == "overlay2":
            assert os.path.ismount(path)
            assert await rootfs.rw_size("c1") == len(b"changed!")
            assert rootfs.graph_driver("c1", lowers)["LowerDir"].startswith(str(lowers[1]))
        await rootfs.unmount("c1")
        assert not os.path.ismount(path)
        await rootfs.remove("c1")
        await rootfs.remove("c2")
        assert not (tmp_path / "containers-rootfs" / "c1").exists()

    asyncio.run(scenario())


def test_many_layers_fit_mount_options(tmp_path: Path) -> None:
    if asyncio.run(detect_driver(tmp_path)) != "overlay2":
        pytest.skip("overlay not usable here")
    store = LayerStore(tmp_path, Database(tmp_path / "d.db"))
    parent = None
    lowers = []
    for i in range(100):
        layer = imp(store, make_tar(f(f"f{i}", str(i).encode())), parent)
        parent = layer.chain_id
        lowers.append(store.diff_dir(layer.chain_id))
    rootfs = Rootfs(tmp_path, "overlay2")

    async def scenario() -> None:
        path = await rootfs.mount_rootfs("big", lowers)
        assert (path / "f0").read_bytes() == b"0" and (path / "f99").read_bytes() == b"99"
        await rootfs.remove("big")

    asyncio.run(scenario())
