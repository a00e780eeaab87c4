"""``docker cp`` both ways and ``docker export``, through the real docker CLI and the docker SDK, on
running and stopped containers, with dockerd's stat header, names and error texts."""

from __future__ import annotations

import base64
import io
import json
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from tests.conftest import Daemon, poll
from tests.tar_helpers import d, f, make_tar, sym

pytestmark = [pytest.mark.root]


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def _member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


def _daemon_mounts(daemon: Daemon) -> str:
    assert daemon.proc is not None
    return Path(f"/proc/{daemon.proc.pid}/mountinfo").read_text()


@pytest.fixture
def running(daemon: Daemon, unique_name: str) -> Iterator[str]:
    script = "mkdir -p /data/sub && echo hello > /data/greeting && echo deep > /data/sub/file && sleep 300"
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sh", "-c", script)
    daemon.cli("exec", unique_name, "sh", "-c", "while [ ! -f /data/sub/file ]; do sleep 0.05; done")
    yield unique_name
    daemon.cli("rm", "-f", unique_name, check=False)


@pytest.fixture
def stopped(daemon: Daemon, unique_name: str) -> Iterator[str]:
    name = unique_name + "-x"
    daemon.cli(
        "run", "--name", name, "busybox", "sh", "-c", "mkdir -p /data/sub && echo bye > /data/greeting"
    )
    yield name
    daemon.cli("rm", "-f", name, check=False)


def test_cp_file_and_directory_out_of_a_running_container(
    daemon: Daemon, running: str, tmp_path: Path
) -> None:
    daemon.cli("cp", f"{running}:/data/greeting", str(tmp_path / "g.txt"))
    assert (tmp_path / "g.txt").read_text() == "hello\n"
    daemon.cli("cp", f"{running}:/data", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "greeting").read_text() == "hello\n"
    assert (tmp_path / "copy" / "sub" / "file").read_text() == "deep\n"
    out = daemon.cli("cp", f"{running}:/data/greeting", "-").stdout  # a tar on stdout
    assert _names(out) == ["greeting"] and _member(out, "greeting") == b"hello\n"


def test_cp_out_of_a_stopped_and_a_created_container(daemon: Daemon, stopped: str, tmp_path: Path) -> None:
    daemon.cli("cp", f"{stopped}:/data/greeting", str(tmp_path / "g.txt"))
    assert (tmp_path / "g.txt").read_text() == "bye\n"
    created = daemon.cli("create", "busybox", "true").stdout.decode().strip()
    try:
        daemon.cli("cp", f"{created}:/etc/passwd", str(tmp_path / "passwd"))
        assert (tmp_path / "passwd").read_text().startswith("root:x:0:0:")
    finally:
        daemon.cli("rm", created)
    # Nothing stays mounted for a container that does not run (the daemon's own mount namespace).
    assert created not in _daemon_mounts(daemon)


def test_cp_into_a_running_container_then_read_it_back(daemon: Daemon, running: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "b.txt").write_text("nested\n")
    daemon.cli("cp", str(tmp_path / "in.txt"), f"{running}:/data/in.txt")
    daemon.cli("cp", str(tmp_path / "tree"), f"{running}:/data/")
    cat = daemon.cli("exec", running, "cat", "/data/in.txt", "/data/tree/a/b.txt").stdout
    assert cat == b"from the host\nnested\n"
    owner = daemon.cli("exec", running, "stat", "-c", "%u", "/data/in.txt").stdout.decode().strip()
    assert owner == "0"  # the archive's owner (the test's files belong to root), kept as dockerd keeps it


def test_cp_into_a_stopped_container_then_start_it(daemon: Daemon, unique_name: str, tmp_path: Path) -> None:
    (tmp_path / "msg").write_text("written while stopped\n")
    daemon.cli("create", "--name", unique_name, "busybox", "cat", "/msg")
    try:
        daemon.cli("cp", str(tmp_path / "msg"), f"{unique_name}:/msg")
        assert daemon.cli("start", "-a", unique_name).stdout == b"written while stopped\n"
    finally:
        daemon.cli("rm", "-f", unique_name)


def test_export_lists_the_whole_filesystem(daemon: Daemon, stopped: str, running: str) -> None:
    for name, greeting in ((stopped, b"bye\n"), (running, b"hello\n")):
        data = daemon.cli("export", name).stdout
        names = _names(data)
        assert {"bin/busybox", "etc/passwd", "data/greeting"} <= set(names)
        assert "data" in names and not any(n.startswith(("/", "./")) for n in names)
        assert _member(data, "data/greeting") == greeting
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            assert tar.getmember("bin/sh").issym() and tar.getmember("bin/sh").linkname == "busybox"


def test_sdk_get_archive_with_stat(daemon: Daemon, running: str) -> None:
    container = daemon.client.containers.get(running)
    chunks, stat = container.get_archive("/data")
    data = b"".join(chunks)
    assert stat["name"] == "data" and stat["mode"] == (1 << 31) | 0o755 and stat["linkTarget"] == ""
    assert stat["mtime"].endswith("Z")
    assert {"data", "data/greeting", "data/sub", "data/sub/file"} <= set(_names(data))
    _, link = container.get_archive("/bin/sh")
    assert link["mode"] == (1 << 27) | 0o777 and link["linkTarget"] == "/bin/busybox"
    assert daemon.api.get_archive(running, "/data/greeting")[1]["size"] == 6


def test_head_archive_is_the_stat_header_alone(daemon: Daemon, running: str) -> None:
    resp = daemon.http().head(daemon.api._url(f"/containers/{running}/archive"), params={"path": "/data/"})
    assert resp.status_code == 200 and resp.content == b""
    stat = json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))
    assert list(stat) == ["name", "size", "mode", "mtime", "linkTarget"]
    assert stat["name"] == "data" and stat["mode"] & (1 << 31)
    passwd = daemon.http().head(
        daemon.api._url(f"/containers/{running}/archive"), params={"path": "/etc/passwd"}
    )
    assert json.loads(base64.b64decode(passwd.headers["X-Docker-Container-Path-Stat"]))["mode"] == 0o644


def test_sdk_put_archive_and_export(daemon: Daemon, running: str) -> None:
    container = daemon.client.containers.get(running)
    tar = make_tar(
        d("put"), f("put/one.txt", b"one\n", uid=1234, gid=4321, mode=0o640), sym("put/l", "one.txt")
    )
    assert container.put_archive("/data", tar) is True
    out = container.exec_run(["sh", "-c", "cat /data/put/l; stat -c '%u:%g %a' /data/put/one.txt"]).output
    assert out == b"one\n1234:4321 640\n"  # owners from the archive, as dockerd keeps them
    exported = b"".join(container.export())
    assert _member(exported, "data/put/one.txt") == b"one\n"


def test_copy_uid_gid_uses_the_containers_user(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "--user", "nobody", "busybox", "true")
    try:
        daemon.api.put_archive(unique_name, "/tmp", make_tar(f("mine.txt", b"x", uid=5, gid=6)))
        resp = daemon.http().put(
            daemon.api._url(f"/containers/{unique_name}/archive"),
            params={"path": "/tmp", "copyUIDGID": "1"},
            data=make_tar(f("theirs.txt", b"x", uid=5, gid=6)),
        )
        assert resp.status_code == 200, resp.text
        data = daemon.cli("export", unique_name).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            assert (tar.getmember("tmp/mine.txt").uid, tar.getmember("tmp/mine.txt").gid) == (5, 6)
            nobody = tar.getmember("tmp/theirs.txt")
            assert (nobody.uid, nobody.gid) == (65534, 65534)
    finally:
        daemon.cli("rm", unique_name)


def test_missing_path_and_missing_container_errors(daemon: Daemon, running: str, tmp_path: Path) -> None:
    cp = daemon.cli("cp", f"{running}:/no/such/file", str(tmp_path / "x"), check=False)
    assert cp.returncode != 0 and b"Could not find the file /no/such/file in container" in cp.stderr
    with pytest.raises(docker.errors.NotFound) as err:
        daemon.api.get_archive(running, "/nope")
    assert err.value.explanation == f"Could not find the file /nope in container {running}"
    with pytest.raises(docker.errors.NotFound) as err:
        daemon.api.get_archive("no-such-container-xyz", "/etc")
    assert err.value.explanation == "No such container: no-such-container-xyz"
    resp = daemon.http().get(daemon.api._url(f"/containers/{running}/archive"))
    assert resp.status_code == 400 and resp.json()["message"] == "bad parameter: pathcannot be empty"
    head = daemon.http().head(daemon.api._url(f"/containers/{running}/archive"), params={"path": "/nope"})
    assert head.status_code == 404 and head.content == b""
    export = daemon.cli("export", "no-such-container-xyz", check=False)
    assert export.returncode != 0 and b"No such container: no-such-container-xyz" in export.stderr
    cp_in = daemon.cli("cp", str(tmp_path), "no-such-container-xyz:/tmp", check=False)
    assert cp_in.returncode != 0 and b"No such container: no-such-container-xyz" in cp_in.stderr


def test_put_errors_are_dockerds(daemon: Daemon, running: str) -> None:
    with pytest.raises(docker.errors.NotFound) as err:
        daemon.api.put_archive(running, "/no/such/dir", make_tar(f("x")))
    assert err.value.explanation == f"Could not find the file /no/such/dir in container {running}"
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.put_archive(running, "/data/greeting", make_tar(f("x")))
    assert "extraction point is not a directory" in str(err.value.explanation)
    url = daemon.api._url(f"/containers/{running}/archive")
    resp = daemon.http().put(
        url, params={"path": "/data", "noOverwriteDirNonDir": "1"}, data=make_tar(f("sub"))
    )
    assert resp.status_code == 400
    assert 'cannot overwrite directory "/data/sub" with non-directory "/data"' in resp.json()["message"]
    # The connection still works after an error with a body (the rest of it was read and dropped).
    assert daemon.api.get_archive(running, "/data/greeting")[1]["size"] == 6


def test_cp_follows_container_symlinks_inside_the_container(daemon: Daemon, running: str) -> None:
    daemon.cli("exec", running, "sh", "-c", "ln -s /data /linked && ln -s /data/greeting /data/g-link")
    tar = make_tar(f("via-link.txt", b"through\n"))
    daemon.api.put_archive(running, "/linked", tar)  # an extraction point that is a symlink is followed
    assert daemon.cli("exec", running, "cat", "/data/via-link.txt").stdout == b"through\n"
    data = b"".join(daemon.api.get_archive(running, "/linked/g-link")[0])
    with tarfile.open(fileobj=io.BytesIO(data)) as t:  # the last component itself is not followed
        assert t.getmember("g-link").issym()
    stat = daemon.api.get_archive(running, "/linked/g-link")[1]
    assert stat["linkTarget"] == "/data/greeting"


def test_large_files_stream_both_ways(daemon: Daemon, running: str, tmp_path: Path) -> None:
    daemon.cli("exec", running, "dd", "if=/dev/urandom", "of=/data/big", "bs=1M", "count=24")
    daemon.cli("cp", f"{running}:/data/big", str(tmp_path / "big"))
    assert (tmp_path / "big").stat().st_size == 24 << 20
    digest = daemon.cli("exec", running, "md5sum", "/data/big").stdout.split()[0]
    (tmp_path / "big").rename(tmp_path / "big2")
    daemon.cli("cp", str(tmp_path / "big2"), f"{running}:/data/big2")
    assert daemon.cli("exec", running, "md5sum", "/data/big2").stdout.split()[0] == digest


def test_a_client_that_leaves_mid_export_releases_the_mount(daemon: Daemon, stopped: str) -> None:
    cid = daemon.api.inspect_container(stopped)["Id"]
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    sock.sendall(f"GET /v1.47/containers/{cid}/export HTTP/1.1\r\nHost: d\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    poll(lambda: cid in _daemon_mounts(daemon), what="the rootfs mounted for the export")
    sock.close()  # gone before reading the whole archive (busybox alone is larger than the socket buffers)
    poll(lambda: cid not in _daemon_mounts(daemon), what="the rootfs unmounted after the client left")
    assert daemon.api.get_archive(stopped, "/data/greeting")[1]["size"] == 4


def test_paths_in_bind_mounts_are_refused_not_silently_wrong(
    daemon: Daemon, unique_name: str, tmp_path: Path
) -> None:
    daemon.cli("create", "--name", unique_name, "-v", f"{tmp_path}:/mnt/host", "busybox", "true")
    try:
        cp = daemon.cli("cp", f"{unique_name}:/mnt/host/x", "-", check=False)
        assert (
            cp.returncode != 0
            and b"copying to or from a bind mount (/mnt/host) is not supported yet" in cp.stderr
        )
        assert daemon.cli("cp", f"{unique_name}:/etc/passwd", "-").returncode == 0
    finally:
        daemon.cli("rm", unique_name)


def test_read_only_rootfs_refuses_writes_but_not_reads(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "--read-only", "busybox", "true")
    try:
        with pytest.raises(docker.errors.APIError) as err:
            daemon.api.put_archive(unique_name, "/tmp", make_tar(f("x")))
        assert err.value.explanation == "container rootfs is marked read-only"
        with pytest.raises(docker.errors.NotFound):  # existence is checked first, as dockerd does
            daemon.api.put_archive(unique_name, "/nope", make_tar(f("x")))
        assert daemon.api.get_archive(unique_name, "/etc/passwd")[1]["name"] == "passwd"
    finally:
        daemon.cli("rm", unique_name)
