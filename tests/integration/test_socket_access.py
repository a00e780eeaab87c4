"""Unix socket access by group, caller identity from SO_PEERCRED, and fd:// systemd socket activation.

Real users and a group are created for the module (``groupadd``/``useradd``) and removed afterwards; the
docker CLI runs as them through ``setpriv`` (it execs in place: the CLI's pid is the one the daemon sees).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DOCKER_CLI, ROOT, Daemon, _base_dir

pytestmark = pytest.mark.root


@dataclass(frozen=True)
class Users:
    group: str
    member: str
    outsider: str


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    """A group with one member and one user outside it, removed after the module."""
    tag = os.urandom(3).hex()
    u = Users(group=f"dyg{tag}", member=f"dym{tag}", outsider=f"dyo{tag}")
    try:
        subprocess.run(["groupadd", u.group], check=True, capture_output=True)
        subprocess.run(["useradd", "-M", "-N", "-G", u.group, u.member], check=True, capture_output=True)
        subprocess.run(["useradd", "-M", "-N", u.outsider], check=True, capture_output=True)
        yield u
    finally:
        for user in (u.member, u.outsider):
            subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", u.group], check=False, capture_output=True)


@pytest.fixture(scope="module")
def group_daemon(seed_root: Path, users: Users) -> Iterator[Daemon]:
    """A daemon whose socket belongs to the test group, in a directory others may traverse."""
    base = _base_dir()
    base.chmod(0o711)  # mkdtemp's 0700 would refuse everyone before the socket's own mode is consulted
    d = Daemon(base, seed_root, ["-G", users.group])
    d.start()
    yield d
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


def _as_user(user: str, d: Daemon, *args: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "DOCKER_HOST": d.host,
           "DOCKER_CLI_HINTS": "false", "DOCKER_CONFIG": f"/nonexistent/{user}"}  # fmt: skip
    cmd = [
        "setpriv",
        f"--reuid={user}",
        f"--regid={pwd.getpwnam(user).pw_gid}",
        "--init-groups",
        DOCKER_CLI,
        *args,
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )


def test_socket_mode_owner_and_group(group_daemon: Daemon, users: Users) -> None:
    st = group_daemon.socket.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0
    assert st.st_gid == grp.getgrnam(users.group).gr_gid


def test_group_member_gets_in_and_is_identified(group_daemon: Daemon, users: Users) -> None:
    proc = _as_user(users.member, group_daemon, "ps")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith(b"CONTAINER ID")
    pw = pwd.getpwnam(users.member)
    line = f"transport=unix uid={pw.pw_uid} gid={pw.pw_gid} pid={proc.pid} user={users.member}"
    assert line in group_daemon.log_path.read_text()


def test_non_member_is_denied(group_daemon: Daemon, users: Users) -> None:
    proc = _as_user(users.outsider, group_daemon, "ps")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"permission denied" in err
    assert out == b""
    uid = pwd.getpwnam(users.outsider).pw_uid
    assert f"uid={uid} " not in group_daemon.log_path.read_text()


# -- fd:// (systemd socket activation without systemd) -----------------------------------------------------

LAUNCHER = textwrap.dedent(
    """
    # Acts as systemd: bind the socket, pass it as fd 3, exec the daemon in place so LISTEN_PID is its pid.
    import os, socket, sys
    path, args = sys.argv[1], sys.argv[2:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o660)
    sock.listen(64)
    if sock.fileno() != 3:
        os.dup2(sock.fileno(), 3)
    os.set_inheritable(3, True)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="dockyard.socket")
    os.execv(sys.executable, [sys.executable, "-m", "dockyard.daemon", *args])
    """
)


class ActivatedDaemon(Daemon):
    """A daemon started with ``-H HOST`` on a socket it inherited as fd 3."""

    def __init__(self, base: Path, seed_root: Path, fd_host: str) -> None:
        super().__init__(base, seed_root)
        self.fd_host = fd_host

    def start(self) -> None:
        """Launch through the systemd stand-in and wait for ``/_ping``."""
        launcher = self.base / "launcher.py"
        launcher.write_text(LAUNCHER)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, str(launcher), str(self.socket), "-H", self.fd_host,
             "--data-root", str(self.data_root), "--exec-root", str(self.exec_root), "--log-level", "debug"],
            stdout=log, stderr=log, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockyardd did not come up:\n{self.log_path.read_text()}")
            time.sleep(0.02)


@pytest.mark.parametrize("fd_host", ["fd://", "fd://3"])
def test_systemd_socket_activation(seed_root: Path, fd_host: str) -> None:
    d = ActivatedDaemon(_base_dir(), seed_root, fd_host)
    try:
        d.start()
        assert d.proc is not None
        assert d.cli("ps").stdout.startswith(b"CONTAINER ID")
        assert d.cli("run", "--rm", "busybox", "echo", "activated").stdout == b"activated\n"
        # systemd passes the socket inheritable; shims and runtimes must not keep the API socket open.
        flags = int(Path(f"/proc/{d.proc.pid}/fdinfo/3").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_CLOEXEC
        assert "transport=unix uid=0 gid=0" in d.log_path.read_text()
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)


def test_fd_host_without_passed_sockets_fails(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard.daemon", "-H", "fd://", "--data-root", str(tmp_path / "r"),
         "--exec-root", str(tmp_path / "e"), "--runtime", "runc"],
        capture_output=True, env=env, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert b"no sockets were passed by systemd" in proc.stderr


def test_systemd_units_match_the_daemon(tmp_path: Path) -> None:
    units = ROOT / "contrib" / "systemd"
    sock = (units / "dockyard.socket").read_text()
    for line in ("ListenStream=/var/run/dockyard.sock", "SocketMode=0660", "SocketGroup=docker"):
        assert line in sock.splitlines()
    service = (units / "dockyard.service").read_text()
    assert "ExecStart=/usr/local/bin/dockyardd -H fd://" in service.splitlines()
    assert "KillMode=process" in service.splitlines()  # containers outlive the daemon under their shims
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    (tmp_path / "dockyard.socket").write_text(sock)
    dockyardd = Path(sys.executable).with_name("dockyardd")
    (tmp_path / "dockyard.service").write_text(service.replace("/usr/local/bin/dockyardd", str(dockyardd)))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "dockyard.socket"), str(tmp_path / "dockyard.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_connection_identity_is_the_callers(group_daemon: Daemon) -> None:
    """Root connecting from this very process: uid 0 and this pid, from the kernel, whatever is sent."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(group_daemon.socket))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Forwarded-User: alice\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(OSError):
            while s.recv(4096):
                pass
    assert f"transport=unix uid=0 gid=0 pid={os.getpid()} user=root" in group_daemon.log_path.read_text()
