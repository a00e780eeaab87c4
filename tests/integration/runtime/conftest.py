"""Fixtures for driving the real OCI runtime through conmon with a busybox rootfs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.errors import DockyardError
from dockyard.runtime.oci import OciRuntime
from tests.integration.runtime.runtime_harness import BUSYBOX, Harness, make_runtime, require_root_tools


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal root filesystem: static busybox with its applets, /etc/passwd and /etc/group."""
    require_root_tools()
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
        (root / sub).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return root


@pytest.fixture
def harness(busybox_rootfs: Path, tmp_path: Path) -> Iterator[Harness]:
    """A fresh runtime with its own state root; kills and deletes leftovers at teardown."""
    loop = asyncio.new_event_loop()
    h = Harness(loop.run_until_complete(_make(tmp_path)), busybox_rootfs, tmp_path, loop)
    try:
        yield h
    finally:
        for cid in h.created:
            with contextlib.suppress(DockyardError):
                loop.run_until_complete(h.runtime.kill(cid, 9))
            with contextlib.suppress(DockyardError):
                loop.run_until_complete(h.runtime.delete(cid))
        loop.close()


async def _make(base: Path) -> OciRuntime:
    return make_runtime(base)
