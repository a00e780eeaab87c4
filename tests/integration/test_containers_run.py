"""``docker run`` and ``docker attach``: stdin, half-close, TTY, exit codes, wait."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import socket
import subprocess
import time
from collections.abc import Iterator

import docker.errors
import pytest

from tests.conftest import DOCKER_CLI, Daemon


def cli_env(daemon: Daemon) -> dict[str, str]:
    """Environment for a docker CLI started by hand."""
    return {**os.environ, "DOCKER_HOST": daemon.host, "DOCKER_CLI_HINTS": "false"}


@contextlib.contextmanager
def stdin_socket(daemon: Daemon, cid: str) -> Iterator[socket.socket]:
    """A raw stream attached to the container's stdin through the SDK, closed on leaving."""
    sock = daemon.api.attach_socket(cid, params={"stdin": 1, "stream": 1})
    try:
        yield sock._sock
    finally:
        sock._sock.close()
        sock.close()


def test_run_stdin_piped(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z", input=b"hello\nworld\n")
    assert proc.stdout == b"HELLO\nWORLD\n"


def test_run_output_after_stdin_closed(daemon: Daemon) -> None:
    script = "cat; sleep 0.3; echo late; echo late-err >&2"
    proc = daemon.cli("run", "--rm", "-i", "busybox", "sh", "-c", script, input=b"early\n")
    assert proc.stdout == b"early\nlate\n"
    assert proc.stderr == b"late-err\n"


def test_run_large_stdin_roundtrip(daemon: Daemon) -> None:
    data = os.urandom(300_000).hex().encode()
    proc = daemon.cli("run", "--rm", "-i", "busybox", "md5sum", input=data)
    import hashlib

    assert proc.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()


def test_run_tty_output_raw(daemon: Daemon) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [DOCKER_CLI, "run", "--rm", "-t", "busybox", "sh", "-c", "echo out; echo err >&2; tty"],
            stdin=slave, stdout=slave, stderr=slave, env=cli_env(daemon),
        )  # fmt: skip
        assert proc.wait(30) == 0
        out = _drain(master)
    finally:
        os.close(master)
        os.close(slave)
    # The test's own pty adds a \r to each \n (the CLI leaves it cooked without -i); no stdcopy headers.
    assert out.replace(b"\r\r\n", b"\r\n").startswith(b"out\r\nerr\r\n/dev/pts/")


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_run_tty_without_terminal_is_raw_bytes(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "-t", "busybox", "sh", "-c", "echo out; echo err >&2", check=False)
    # the CLI refuses -t without a terminal on stdin only with -i; here the output is the raw TTY bytes
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"out\r\nerr\r\n"


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_codes(daemon: Daemon, code: int) -> None:
    assert daemon.cli("run", "--rm", "busybox", "sh", "-c", f"exit {code}", check=False).returncode == code


def test_exit_137_after_kill(daemon: Daemon, unique_name: str) -> None:
    proc = subprocess.Popen(
        [DOCKER_CLI, "run", "--name", unique_name, "busybox", "sh", "-c", "echo ready; sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(daemon),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        daemon.cli("kill", unique_name)
        assert proc.wait(10) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_missing_command_is_127(daemon: Daemon, unique_name: str) -> None:
    proc = daemon.cli("run", "--name", unique_name, "busybox", "nosuchcmd", check=False)
    assert proc.returncode == 127
    assert b'exec: "nosuchcmd": executable file not found in $PATH' in proc.stderr
    state = daemon.api.inspect_container(unique_name)["State"]
    assert state["ExitCode"] == 127
    assert "executable file not found" in state["Error"]


def test_missing_absolute_path_is_127(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "busybox", "/no/such/file", check=False)
    assert proc.returncode == 127
    assert b"/no/such/file" in proc.stderr


def test_missing_absolute_path_text(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "busybox", "/no/such/file", check=False)
    assert b'exec: "/no/such/file": stat /no/such/file: no such file or directory' in proc.stderr


def test_non_executable_is_126(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert proc.returncode == 126
    assert b"permission denied" in proc.stderr
    proc = daemon.cli("run", "--rm", "busybox", "/etc", check=False)
    assert proc.returncode == 126


def test_missing_command_via_sdk(daemon: Daemon) -> None:
    c = daemon.client.containers.create("busybox", ["nosuchcmd"])
    with pytest.raises(docker.errors.APIError) as err:
        c.start()
    assert err.value.status_code == 400
    assert "executable file not found" in str(err.value.explanation)
    c.remove()


def test_docker_wait(daemon: Daemon) -> None:
    cid = daemon.cli("run", "-d", "-i", "busybox", "sh", "-c", "read x; exit 6").stdout.decode().strip()
    waiter = subprocess.Popen([DOCKER_CLI, "wait", cid], stdout=subprocess.PIPE, env=cli_env(daemon))
    try:
        time.sleep(0.2)
        assert waiter.poll() is None  # still waiting: the container has not exited
        with stdin_socket(daemon, cid) as sock:
            sock.sendall(b"\n")
            out, _ = waiter.communicate(timeout=10)
        assert out == b"6\n"
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert daemon.api.wait(cid)["StatusCode"] == 6  # already exited: returns at once


def test_wait_bad_condition(daemon: Daemon) -> None:
    cid = daemon.cli("create", "busybox").stdout.decode().strip()
    resp = daemon.api.post(daemon.api._url("/containers/{0}/wait", cid), params={"condition": "bogus"})
    assert resp.status_code == 400


def test_attach_to_running_container(daemon: Daemon) -> None:
    cid = daemon.cli("run", "-d", "-i", "busybox", "sh", "-c", "while read l; do echo got:$l; done; echo bye")
    cid_s = cid.stdout.decode().strip()
    proc = subprocess.Popen(
        [DOCKER_CLI, "attach", cid_s], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env(daemon),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        time.sleep(0.3)  # the attach connects; input sent before that would be a different test
        proc.stdin.write(b"a\nb\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"got:a\n"
        assert proc.stdout.readline() == b"got:b\n"
        # As with dockerd, the container's stdin stays open (StdinOnce false): attach ends when it stops.
        daemon.cli("stop", "-t", "0", cid_s)
        assert proc.wait(10) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_attach_output_only(daemon: Daemon) -> None:
    cid = (
        daemon.cli("run", "-d", "-i", "busybox", "sh", "-c", "read x; echo after-$x").stdout.decode().strip()
    )
    proc = subprocess.Popen(
        [DOCKER_CLI, "attach", "--no-stdin", cid], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, env=cli_env(daemon),
    )  # fmt: skip
    try:
        time.sleep(0.3)  # let the attach connect before the output is produced
        with stdin_socket(daemon, cid) as sock:
            sock.sendall(b"x\n")
            out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out == b"after-x\n"
    assert proc.returncode == 0


def test_run_detached_then_logs(daemon: Daemon) -> None:
    cid = daemon.cli("run", "-d", "busybox", "echo", "detached").stdout.decode().strip()
    assert len(cid) == 64
    assert daemon.api.wait(cid)["StatusCode"] == 0
    assert daemon.cli("logs", cid).stdout == b"detached\n"
