"""The first thing a user does: run hello-world and busybox with the real docker CLI."""

from __future__ import annotations

from tests.conftest import Daemon


def test_hello_world(daemon: Daemon) -> None:
    out = daemon.cli("run", "--rm", "hello-world").stdout.decode()
    assert "Hello from Docker!" in out


def test_busybox_echo_and_exit_code(daemon: Daemon) -> None:
    assert daemon.cli("run", "--rm", "busybox", "echo", "hi").stdout == b"hi\n"
    proc = daemon.cli("run", "--rm", "busybox", "sh", "-c", "exit 7", check=False)
    assert proc.returncode == 7
