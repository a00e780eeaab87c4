"""Helpers for driving the real OCI runtime through conmon (unique module name: imported by tests)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dockyard.engine.ocispec import SpecInput, build_spec
from dockyard.runtime.base import ContainerSetup
from dockyard.runtime.detect import detect_runtime
from dockyard.runtime.oci import OciRuntime

BUSYBOX = Path("/bin/busybox")
T = TypeVar("T")


def require_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("conmon", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")


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
