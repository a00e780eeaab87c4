"""Offline seed images: ``busybox:latest`` and ``hello-world:latest`` built from local files.

There is no registry to pull from on an offline host, so the two images every Docker tutorial uses are
made here: busybox from Debian's ``busybox-static`` (``/bin/busybox`` and its applet links, with the
``/etc`` skeleton of the official image), hello-world from a tiny static C program compiled at seed
time (needs ``gcc`` and ``libc6-dev``). Works directly on the store (no daemon); idempotent.

Usage: ``python -m dockyard.store.seed --data-root DIR [--storage-driver overlay2|vfs]``
"""

from __future__ import annotations

import argparse
import asyncio
import io
import platform
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dockyard.errors import SystemFailure
from dockyard.store.blobs import BlobStore
from dockyard.store.db import Database
from dockyard.store.images import ImageStore, encode_config, now_rfc3339
from dockyard.store.layers import LayerStore

__all__ = ["HELLO_TEXT", "busybox_tar", "hello_tar", "main", "seed"]

BUSYBOX = Path("/bin/busybox")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HELLO_TEXT = """
Hello from Docker!
This message shows that your installation appears to be working correctly.

To generate this message, Docker took the following steps:
 1. The Docker client contacted the Docker daemon.
 2. The Docker daemon pulled the "hello-world" image from the Docker Hub.
    (amd64)
 3. The Docker daemon created a new container from that image which runs the
    executable that produces the output you are currently reading.
 4. The Docker daemon streamed that output to the Docker client, which sent it
    to your terminal.

To try something more ambitious, you can run an Ubuntu container with:
 $ docker run -it ubuntu bash

Share images, automate workflows, and more with a free Docker ID:
 https://hub.docker.com/

For more examples and ideas, visit:
 https://docs.docker.com/get-started/

"""
_PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
_GROUPS = [
    ("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3), ("adm", 4), ("tty", 5), ("disk", 6), ("lp", 7),
    ("mail", 8), ("kmem", 9), ("wheel", 10), ("cdrom", 11), ("dialout", 18), ("floppy", 19),
    ("video", 28), ("audio", 29), ("tape", 32), ("www-data", 33), ("operator", 37), ("utmp", 43),
    ("plugdev", 46), ("staff", 50), ("lock", 54), ("netdev", 82), ("users", 100), ("nogroup", 65534),
]  # fmt: skip
_DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "lib": 0o755, "proc": 0o755,
    "root": 0o700, "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/sbin": 0o755, "var": 0o755,
    "var/spool": 0o755, "var/spool/mail": 0o755, "var/www": 0o755,
}  # fmt: skip
_HELLO_C = r"""
#include <unistd.h>
static const char msg[] = MSG;
int main(void) { return write(1, msg, sizeof msg - 1) == sizeof msg - 1 ? 0 : 1; }
"""


class _Tar:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w")  # noqa: SIM115 - closed in done()

    def add(self, name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
        info.mtime = 0
        self.tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    def done(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def busybox_tar(busybox: Path = BUSYBOX) -> bytes:
    """The busybox root filesystem as a tar."""
    out = _Tar()
    for name, mode in _DIRS.items():
        out.add(name, tarfile.DIRTYPE, mode)
    out.add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, text=True).stdout
    for applet in sorted(set(applets.split()) - {"busybox"}):
        out.add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
    groups = "".join(f"{n}:x:{g}:{'root' if n == 'wheel' else ''}\n" for n, g in _GROUPS)
    shadow = "".join(f"{line.split(':')[0]}:*::0:::::\n" for line in _PASSWD.splitlines())
    for name, text, mode in [
        ("etc/passwd", _PASSWD, 0o644),
        ("etc/group", groups, 0o644),
        ("etc/shadow", shadow, 0o600),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
        ("etc/hostname", "", 0o644),
        ("etc/resolv.conf", "", 0o644),
        ("etc/nsswitch.conf", "hosts: files dns\n", 0o644),
    ]:
        out.add(name, tarfile.REGTYPE, mode, text.encode())
    return out.done()


def hello_tar() -> bytes:
    """A root filesystem with a static ``/hello`` printing Docker's hello-world text."""
    literal = '"' + HELLO_TEXT.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "hello.c", Path(tmp) / "hello"
        src.write_text(_HELLO_C)
        cmd = ["gcc", "-static", "-Os", "-s", f"-DMSG={literal}", "-o", str(exe), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemFailure(f"building hello-world failed: {result.stderr.strip()}")
        out = _Tar()
        out.add("hello", tarfile.REGTYPE, 0o755, exe.read_bytes())
        return out.done()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _import(layers: LayerStore, images: ImageStore, ref: str, data: bytes, cmd: list[str]) -> str:
    layer = await layers.import_stream(_once(data))
    created = now_rfc3339()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    blob: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "author": "",
        "comment": "Imported from -",
        "config": {"Env": [PATH_ENV], "Cmd": cmd},
        "history": [{"created": created, "comment": "Imported from -"}],
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    image_id = images.create(encode_config(blob), layer.chain_id, layer.size)
    images.add_reference(ref, image_id)
    return image_id


async def seed(data_root: Path) -> dict[str, str]:
    """Import the seed images that are missing into the store under ``data_root``.

    Returns:
        Reference to image id, for the images present afterwards.
    """
    db = Database(data_root / "dockyard.db")
    try:
        layers = LayerStore(data_root, db)
        images = ImageStore(db, BlobStore(data_root / "blobs"))
        wanted = {
            "docker.io/library/busybox:latest": (busybox_tar, ["sh"]),
            "docker.io/library/hello-world:latest": (hello_tar, ["/hello"]),
        }
        result: dict[str, str] = {}
        for ref, (build, cmd) in wanted.items():
            existing = images.lookup(ref)
            if existing is None:
                data = await asyncio.to_thread(build)
                existing = await _import(layers, images, ref, data, cmd)
            result[ref] = existing
        return result
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m dockyard.store.seed", description=__doc__)
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--storage-driver", choices=["overlay2", "vfs"], default="overlay2")
    args = parser.parse_args(argv)
    for ref, image_id in asyncio.run(seed(args.data_root)).items():
        print(f"{ref} {image_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
