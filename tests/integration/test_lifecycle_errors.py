"""Lifecycle error paths through the real CLI: failed starts, 304s, 409s, and the state they leave."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.root


def test_run_missing_command_exit_127(daemon: Daemon, unique_name: str) -> None:
    started = time.monotonic()
    proc = daemon.cli("run", "--name", unique_name, "busybox", "/no/such/cmd", check=False, timeout=30)
    assert proc.returncode == 127
    assert b"no such file or directory" in proc.stderr.lower() or b"not found" in proc.stderr.lower()
    assert time.monotonic() - started < 10
    state = daemon.api.inspect_container(unique_name)["State"]
    assert state["Status"] in ("created", "exited") and state["ExitCode"] == 127 and state["Error"]
    # a failed start can be retried; it fails the same way and the daemon keeps going
    again = daemon.cli("start", unique_name, check=False)
    assert again.returncode != 0 and daemon.ping()


def test_run_rm_missing_command_is_removed(daemon: Daemon, unique_name: str) -> None:
    proc = daemon.cli(
        "run", "--rm", "--name", unique_name, "busybox", "/no/such/cmd", check=False, timeout=30
    )
    assert proc.returncode == 127
    names = daemon.cli("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
    assert unique_name not in names


def test_not_modified_and_conflicts(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sleep", "60")
    resp = daemon.api._post(daemon.api._url("/containers/{0}/start", unique_name))
    assert resp.status_code == 304
    daemon.cli("pause", unique_name)
    assert daemon.api.inspect_container(unique_name)["State"]["Status"] == "paused"
    daemon.cli("unpause", unique_name)
    daemon.cli("stop", "-t", "0", unique_name)
    resp = daemon.api._post(daemon.api._url("/containers/{0}/stop", unique_name))
    assert resp.status_code == 304
    proc = daemon.cli("kill", unique_name, check=False)
    assert proc.returncode == 1 and b"is not running" in proc.stderr
    proc = daemon.cli("pause", unique_name, check=False)
    assert proc.returncode == 1 and b"is not running" in proc.stderr
    assert daemon.api.inspect_container(unique_name)["State"]["ExitCode"] == 137


def test_restart_counts_and_keeps_logs(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sh", "-c", "echo hi; sleep 60")
    daemon.cli("restart", "-t", "0", unique_name)
    deadline = time.monotonic() + 10
    while daemon.cli("logs", unique_name).stdout != b"hi\nhi\n":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    info = daemon.api.inspect_container(unique_name)
    assert info["State"]["Running"] is True and info["RestartCount"] == 0
    daemon.cli("rm", "-f", unique_name)
