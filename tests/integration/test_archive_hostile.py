"""Hostile archives for ``PUT /containers/{id}/archive`` and hostile containers for ``docker cp``: nothing
may be created, changed or read outside the container's root, whatever the tar or the container holds.

dockerd answers these with 500 ("Error processing tar file(exit status 1): ..."); dockyard keeps the text
and answers 400, because the archive is the client's fault.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from tests.conftest import Daemon
from tests.tar_helpers import f, hard, make_tar, sym

pytestmark = [pytest.mark.root]

_HOST_PLACES = (Path("/tmp"), Path("/"), Path("/etc"))  # where an escaping member would land on the host


@pytest.fixture
def box(daemon: Daemon, unique_name: str) -> Iterator[str]:
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sh", "-c", "mkdir /data; sleep 300")
    daemon.cli("exec", unique_name, "sh", "-c", "while [ ! -d /data ]; do sleep 0.05; done")
    yield unique_name
    daemon.cli("rm", "-f", unique_name, check=False)


@pytest.fixture
def marker() -> Iterator[str]:
    name = "dyarch-" + os.urandom(4).hex()
    yield name
    for leftover in (place / name for place in _HOST_PLACES):
        if leftover.exists() or leftover.is_symlink():
            leftover.unlink()


def _put(daemon: Daemon, cid: str, path: str, data: bytes) -> tuple[int, str]:
    resp = daemon.http().put(daemon.api._url(f"/containers/{cid}/archive"), params={"path": path}, data=data)
    return resp.status_code, resp.json()["message"] if resp.content else ""


def _in_container(daemon: Daemon, cid: str, path: str) -> bool:
    return daemon.cli("exec", cid, "test", "-e", path, check=False).returncode == 0


def _host_clean(marker: str) -> None:
    for place in _HOST_PLACES:
        assert not (place / marker).exists(), f"{place / marker} was created on the host"


def test_dotdot_members_are_refused(daemon: Daemon, box: str, marker: str) -> None:
    for name in (
        f"../../../../../../../tmp/{marker}",
        f"a/../../../../../../../tmp/{marker}",
        f"../{marker}",
    ):
        status, message = _put(daemon, box, "/data", make_tar(f(name, b"pwned")))
        assert status == 400 and "is outside of" in message and '"/data"' in message, message
    _host_clean(marker)
    assert not _in_container(daemon, box, f"/tmp/{marker}")
    # Into "/", dockerd's chroot clamps ".." at the container's root (Go: Join("/", "../x") == "/x").
    assert _put(daemon, box, "/", make_tar(f(f"../../../../tmp/{marker}", b"clamped")))[0] == 200
    _host_clean(marker)
    assert daemon.cli("exec", box, "cat", f"/tmp/{marker}").stdout == b"clamped"


def test_absolute_members_stay_under_the_destination(daemon: Daemon, box: str, marker: str) -> None:
    status, _ = _put(daemon, box, "/data", make_tar(f(f"/tmp/{marker}", b"abs")))
    assert status == 200
    _host_clean(marker)
    assert daemon.cli("exec", box, "cat", f"/data/tmp/{marker}").stdout == b"abs"  # as dockerd: joined


def test_a_container_symlink_to_root_is_followed_inside_the_container(
    daemon: Daemon, box: str, marker: str
) -> None:
    daemon.cli("exec", box, "sh", "-c", "ln -s / /escape && ln -s ../../../../../../../../tmp /data/up")
    assert _put(daemon, box, "/escape/tmp", make_tar(f(marker + "-a", b"via-dest")))[0] == 200
    assert _put(daemon, box, "/data", make_tar(f(f"up/{marker}-b", b"via-member")))[0] == 200
    _host_clean(marker + "-a")
    _host_clean(marker + "-b")
    assert (
        daemon.cli("exec", box, "cat", f"/tmp/{marker}-a", f"/tmp/{marker}-b").stdout == b"via-destvia-member"
    )


def test_a_symlink_made_by_the_archive_cannot_lead_out(daemon: Daemon, box: str, marker: str) -> None:
    # An absolute link passes dockerd's check and is then followed, inside the container (its chroot).
    tar = make_tar(sym("esc", "/"), f(f"esc/tmp/{marker}", b"through"))
    assert _put(daemon, box, "/data", tar)[0] == 200
    assert daemon.cli("exec", box, "cat", f"/tmp/{marker}").stdout == b"through"
    # A relative link out of the destination is refused outright, as dockerd does.
    status, message = _put(daemon, box, "/data", make_tar(sym("rel", "../../../../../../tmp")))
    assert status == 400 and 'invalid symlink "/data/rel" -> "../../../../../../tmp"' in message
    _host_clean(marker)


def test_hardlinks_cannot_reach_outside(daemon: Daemon, box: str, marker: str) -> None:
    host_passwd = os.stat("/etc/passwd")
    status, message = _put(daemon, box, "/data", make_tar(hard(marker, "../../../../../../etc/passwd")))
    assert status == 400 and "invalid hardlink" in message
    daemon.cli("exec", box, "ln", "-s", "/", "/data/root-link")
    # Through a symlink: the target resolves inside the container, so this links the container's passwd.
    assert _put(daemon, box, "/data", make_tar(hard(marker, "root-link/etc/passwd")))[0] == 200
    inode = daemon.cli("exec", box, "stat", "-c", "%i", f"/data/{marker}", "/etc/passwd").stdout.split()
    assert inode[0] == inode[1]
    assert os.stat("/etc/passwd").st_nlink == host_passwd.st_nlink
    _host_clean(marker)


def test_an_existing_leaf_symlink_is_replaced_not_written_through(
    daemon: Daemon, box: str, marker: str
) -> None:
    host_file = Path("/tmp") / marker
    host_file.write_text("host data\n")
    daemon.cli("exec", box, "ln", "-s", str(host_file), "/data/victim")
    daemon.cli("exec", box, "ln", "-s", str(host_file), "/data/victim-dir")
    tar = make_tar(f("victim", b"replaced"), f("victim-dir", b"file"))
    assert _put(daemon, box, "/data", tar)[0] == 200
    assert host_file.read_text() == "host data\n"
    assert daemon.cli("exec", box, "cat", "/data/victim").stdout == b"replaced"


def test_cp_out_does_not_follow_container_symlinks_to_the_host(daemon: Daemon, box: str, marker: str) -> None:
    secret = Path("/tmp") / marker
    secret.write_text("host secret\n")
    daemon.cli("exec", box, "ln", "-s", str(secret), "/data/leak")
    daemon.cli("exec", box, "ln", "-s", "/tmp", "/data/leakdir")
    data = b"".join(daemon.api.get_archive(box, "/data")[0])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmember("data/leak").issym()
        assert all(
            b"host secret" not in (tar.extractfile(m) or io.BytesIO()).read() for m in tar if m.isreg()
        )
    with pytest.raises(docker.errors.NotFound):
        daemon.api.get_archive(box, f"/data/leakdir/{marker}")  # /tmp of the container has no such file
    export = daemon.cli("export", box).stdout
    assert b"host secret" not in export


def test_compressed_and_truncated_archives(daemon: Daemon, box: str) -> None:
    tar = make_tar(f("zipped.txt", b"gz ok\n"))
    assert _put(daemon, box, "/data", gzip.compress(tar))[0] == 200
    assert daemon.cli("exec", box, "cat", "/data/zipped.txt").stdout == b"gz ok\n"
    big = make_tar(f("cut.bin", os.urandom(100_000)))
    status, message = _put(daemon, box, "/data", big[:60_000])
    assert status == 400 and message.startswith("Error processing tar file"), message
