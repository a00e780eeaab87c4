"""Exec with runc (the pty relay and SIGWINCH path for terminals; crun takes the console socket)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, _base_dir
from tests.integration.test_exec_sdk import assert_resize_works

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runc_daemon(seed_root: Path) -> Iterator[Daemon]:
    """A daemon forced onto runc."""
    d = Daemon(_base_dir(), seed_root, ["--runtime", "runc"])
    d.start()
    yield d
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture(scope="module")
def runc_box(runc_daemon: Daemon) -> Iterator[str]:
    """A running container under runc."""
    runc_daemon.cli("run", "-d", "--name", "runc-box", "busybox", "sleep", "600")
    yield "runc-box"
    runc_daemon.cli("rm", "-f", "runc-box", check=False)


def test_runc_is_the_runtime(runc_daemon: Daemon, runc_box: str) -> None:
    assert runc_daemon.api.inspect_container(runc_box)["HostConfig"]["Runtime"] == "runc"


def test_runc_exec_output_stdin_and_codes(runc_daemon: Daemon, runc_box: str) -> None:
    assert (
        runc_daemon.cli("exec", "-i", runc_box, "sh", "-c", "cat; echo late", input=b"hi\n").stdout
        == b"hi\nlate\n"
    )
    assert runc_daemon.cli("exec", runc_box, "sh", "-c", "exit 9", check=False).returncode == 9
    missing = runc_daemon.cli("exec", runc_box, "no-such-command", check=False)
    assert missing.returncode == 127
    assert b'exec: "no-such-command": executable file not found in $PATH' in missing.stdout + missing.stderr


def test_runc_exec_tty(runc_daemon: Daemon, runc_box: str) -> None:
    assert runc_daemon.cli("exec", "-t", runc_box, "sh", "-c", "echo a; tty").stdout == b"a\r\n/dev/pts/0\r\n"
    missing = runc_daemon.cli("exec", "-t", runc_box, "no-such-command", check=False)
    assert missing.returncode == 127


def test_runc_exec_resize(runc_daemon: Daemon, runc_box: str) -> None:
    assert_resize_works(runc_daemon, runc_box)
