"""``docker exec`` with the real docker CLI: output, exit codes, stdin, tty, -d, users, errors, load."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Daemon


@pytest.fixture
def running(daemon: Daemon, unique_name: str) -> Iterator[str]:
    """A running busybox container, removed afterwards."""
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sleep", "600")
    yield unique_name
    daemon.cli("rm", "-f", unique_name, check=False)


def test_exec_prints_output_and_exits_zero(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", running, "sh", "-c", "echo out; echo err >&2")
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 3", 3), ("exit 255", 255), ("kill -9 $$", 137)],
    ids=["three", "max", "sigkill"],
)
def test_exec_exit_code(daemon: Daemon, running: str, script: str, code: int) -> None:
    assert daemon.cli("exec", running, "sh", "-c", script, check=False).returncode == code


def test_exec_missing_command_is_127_with_runtime_message(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", running, "no-such-command", check=False)
    assert proc.returncode == 127
    text = (proc.stdout + proc.stderr).decode()
    assert text.startswith("OCI runtime exec failed:")
    assert 'exec: "no-such-command": executable file not found in $PATH' in text


def test_exec_missing_command_with_tty(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", "-t", running, "no-such-command", check=False)
    assert proc.returncode == 127
    assert b"executable file not found in $PATH" in proc.stdout + proc.stderr


def test_exec_stdin_piped_then_closed(daemon: Daemon, running: str) -> None:
    assert daemon.cli("exec", "-i", running, "cat", input=b"hi\n").stdout == b"hi\n"
    # Output written after stdin ended must still arrive.
    proc = daemon.cli("exec", "-i", running, "sh", "-c", "cat; sleep 0.3; echo late", input=b"a\nb\n")
    assert proc.stdout == b"a\nb\nlate\n"


def test_exec_large_stdin_round_trip(daemon: Daemon, running: str) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, binary
    proc = daemon.cli("exec", "-i", running, "cat", input=data)
    assert proc.stdout == data


def test_exec_tty_output_is_raw(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", "-t", running, "sh", "-c", "echo a; echo b >&2; tty")
    assert proc.stdout == b"a\r\nb\r\n/dev/pts/0\r\n"


def test_exec_detached(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", "-d", running, "sh", "-c", "sleep 0.2; echo done > /tmp/marker")
    assert proc.stdout == b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if daemon.cli("exec", running, "cat", "/tmp/marker", check=False).stdout == b"done\n":
            return
        time.sleep(0.1)
    pytest.fail("the detached exec did not run")


def test_exec_user_workdir_env(daemon: Daemon, running: str) -> None:
    proc = daemon.cli(
        "exec",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        running,
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $FOO",
    )
    assert proc.stdout == b"1000\n1000\n/tmp\nbar\n"
    assert daemon.cli("exec", "-u", "nobody", running, "id", "-un").stdout == b"nobody\n"


def test_exec_env_has_docker_defaults(daemon: Daemon, running: str) -> None:
    env = daemon.cli("exec", running, "env").stdout.decode().splitlines()
    assert any(line.startswith("PATH=") for line in env)
    assert any(line.startswith("HOSTNAME=") for line in env)
    assert "TERM=xterm" not in env
    assert "TERM=xterm" in daemon.cli("exec", "-t", running, "env").stdout.decode().splitlines()


def test_exec_unknown_user(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", "-u", "nouser", running, "id", check=False)
    assert proc.returncode == 126
    assert b"unable to find user nouser: no matching entries in passwd file" in proc.stdout + proc.stderr


def test_exec_into_stopped_container(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox", "true")
    try:
        proc = daemon.cli("exec", unique_name, "true", check=False)
        assert proc.returncode != 0
        assert b"is not running" in proc.stderr
    finally:
        daemon.cli("rm", "-f", unique_name)


def test_exec_into_paused_container(daemon: Daemon, running: str) -> None:
    daemon.cli("pause", running)
    try:
        proc = daemon.cli("exec", running, "true", check=False)
        assert proc.returncode != 0
        assert b"is paused, unpause the container before exec" in proc.stderr
    finally:
        daemon.cli("unpause", running)


def test_exec_unknown_container(daemon: Daemon) -> None:
    proc = daemon.cli("exec", "no-such-container-xyz", "true", check=False)
    assert proc.returncode != 0
    assert b"No such container: no-such-container-xyz" in proc.stderr


def test_concurrent_execs(daemon: Daemon, running: str) -> None:
    def one(i: int) -> bytes:
        return daemon.cli("exec", running, "sh", "-c", f"sleep 0.2; echo {i}").stdout

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert results == [f"{i}\n".encode() for i in range(16)]


def test_exec_output_of_background_child_does_not_hang(daemon: Daemon, running: str) -> None:
    start = time.monotonic()
    proc = daemon.cli("exec", running, "sh", "-c", "sleep 30 & echo started", timeout=20)
    assert proc.stdout == b"started\n"
    assert time.monotonic() - start < 10


def test_exec_detached_missing_command_is_an_error(daemon: Daemon, running: str) -> None:
    proc = daemon.cli("exec", "-d", running, "no-such-command", check=False)
    assert proc.returncode != 0
    assert b"executable file not found in $PATH" in proc.stderr
