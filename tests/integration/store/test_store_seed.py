"""The offline seed images: content, config, idempotence, and that they run (chroot, root only)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from dockyard.engine.images import ImageService
from dockyard.store.blobs import BlobStore
from dockyard.store.db import Database
from dockyard.store.images import ImageStore
from dockyard.store.layers import LayerStore
from dockyard.store.seed import HELLO_TEXT, main, seed


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed")
    assert main(["--data-root", str(root)]) == 0
    return root


def _service(root: Path) -> ImageService:
    db = Database(root / "dockyard.db")
    return ImageService(ImageStore(db, BlobStore(root / "blobs")), LayerStore(root, db), "overlay2")


def test_images_and_config(data_root: Path) -> None:
    svc = _service(data_root)
    assert [s["RepoTags"] for s in svc.list_images()] == [["hello-world:latest"], ["busybox:latest"]]
    busybox = svc.inspect("busybox")
    assert busybox["Config"]["Cmd"] == ["sh"]
    assert busybox["Config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert svc.inspect("hello-world")["Config"]["Cmd"] == ["/hello"]
    root = svc.layers(busybox["Id"])[0]
    assert os.readlink(root / "bin/sh") == "busybox"
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"
    assert "nobody:x:65534:65534" in (root / "etc/passwd").read_text()
    assert "nogroup:x:65534:" in (root / "etc/group").read_text()


def test_idempotent(data_root: Path) -> None:
    before = _service(data_root).list_images()
    again = asyncio.run(seed(data_root))
    assert sorted(again.values()) == sorted(s["Id"] for s in before)
    assert len(_service(data_root).list_images()) == 2


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for chroot")
def test_seed_binaries_run(data_root: Path) -> None:
    svc = _service(data_root)
    hello = svc.layers(svc.resolve("hello-world").id)[0]
    out = subprocess.run(["chroot", str(hello), "/hello"], capture_output=True, check=True)
    assert out.stdout.decode() == HELLO_TEXT
    busybox = svc.layers(svc.resolve("busybox").id)[0]
    out = subprocess.run(
        ["chroot", str(busybox), "/bin/sh", "-c", "echo ok; ls /bin/ls"], capture_output=True, check=True
    )
    assert out.stdout.decode() == "ok\n/bin/ls\n"
