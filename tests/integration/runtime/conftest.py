"""Fixtures for driving the real OCI runtime through conmon with a busybox rootfs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dockyard.engine.ocispec import SpecInput, build_spec
from dockyard.errors import DockyardError
from dockyard.runtime.base import ContainerSetup
from dockyard.runtime.detect import detect_runtime
from dockyard.runtime.oci import OciRuntime

BUSYBOX = Path("/bin/busybox")
T = TypeVar("T")

pytestmark = pytest.mark.root


def _require_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("conmon", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal root filesystem: static busybox with its applets, /etc/passwd and /etc/group."""
    _require_root_tools()
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


@dataclass
class Harness:
    """A runtime plus the containers a test made, removed at teardown whatever happened."""

    runtime: OciRuntime
    rootfs: Path
    base: Path
    loop: asyncio.AbstractEventLoop
    created: list[str] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this harness's event loop (one loop for the whole test)."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def setup(
        self,
        args: list[str],
        tty: bool = False,
        open_stdin: bool = False,
        stdin_once: bool = True,
        **spec: Any,
    ) -> ContainerSetup:
        """A ContainerSetup for a new container running ``args`` in the busybox rootfs."""
        cid = secrets.token_hex(32)
        bundle = self.base / "bundles" / cid
        bundle.mkdir(parents=True)
        inp = SpecInput(
            container_id=cid, rootfs=self.rootfs, args=args, tty=tty, open_stdin=open_stdin, **spec
        )
        return ContainerSetup(cid, bundle, build_spec(inp), tty, open_stdin, bundle / "ctr.log", stdin_once)

    async def create(self, setup: ContainerSetup) -> int:
        """Create and remember for cleanup."""
        self.created.append(setup.id)
        return await self.runtime.create(setup)

    def log_lines(self, setup: ContainerSetup) -> list[tuple[str, str]]:
        """(stream, text) of each k8s-file log line."""
        lines = []
        for line in setup.log_path.read_text().splitlines():
            _, stream, _, text = line.split(" ", 3)
            lines.append((stream, text))
        return lines


def make_runtime(base: Path, name: str | None = None) -> OciRuntime:
    """An OciRuntime with its state under ``base``: $DOCKYARD_TEST_RUNTIME, else the detected one."""
    rt_name, binary, wrapper = detect_runtime(name or os.environ.get("DOCKYARD_TEST_RUNTIME"), state_dir=base)
    return OciRuntime(wrapper or binary, rt_name, base / "state")


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
