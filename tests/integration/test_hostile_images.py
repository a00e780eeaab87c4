"""Images are untrusted input: files the daemon itself reads from a root filesystem must not hang it."""

from __future__ import annotations

import io
import tarfile
import time

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.root


def _image_with_passwd_link(target: str) -> bytes:
    """A root filesystem whose /etc/passwd is a symlink (resolved by the daemon, outside the container)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        etc = tarfile.TarInfo("etc")
        etc.type, etc.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(etc)
        link = tarfile.TarInfo("etc/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, target
        tar.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/random", "/proc/self/fd/0"])
def test_passwd_symlinked_to_a_device_fails_fast(daemon: Daemon, target: str) -> None:
    ref = f"hostile-passwd:{target.strip('/').replace('/', '-')}"
    daemon.cli("import", "-", ref, input=_image_with_passwd_link(target))
    try:
        started = time.monotonic()
        proc = daemon.cli("run", "--rm", "-u", "someone", ref, "true", check=False, timeout=30)
        assert time.monotonic() - started < 10
        assert proc.returncode != 0
        assert b"unable to find user someone" in proc.stderr
        assert daemon.ping()
    finally:
        daemon.cli("rmi", "-f", ref, check=False)
