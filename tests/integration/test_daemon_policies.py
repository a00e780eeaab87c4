"""Restart policies and waiters meet daemon restarts: exits while the daemon was down, containers in
back-off, waiters of re-adopted containers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DOCKER_CLI, Daemon, poll

pytestmark = [pytest.mark.root, pytest.mark.slow]


def inspect(d: Daemon, name: str) -> dict[str, object]:
    return d.api.inspect_container(name)  # type: ignore[no-any-return]


def status(d: Daemon, name: str) -> str:
    return str(inspect(d, name)["State"]["Status"])  # type: ignore[index]


def run_sh(d: Daemon, name: str, script: str, *opts: str) -> None:
    """``docker run -d [opts] --name <name> busybox sh -c <script>`` through the real CLI."""
    d.cli("run", "-d", *opts, "--name", name, "busybox", "sh", "-c", script)


def test_policy_applies_to_exit_while_daemon_down(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    flag = d.base / f"{unique_name}.go"
    script = f"echo run; while [ ! -e /host/{flag.name} ]; do sleep 0.05; done; rm /host/{flag.name}; exit 1"
    run_sh(d, unique_name, script, "--restart", "on-failure:3", "-v", f"{d.base}:/host")
    poll(lambda: b"run" in d.cli("logs", unique_name).stdout, what="first run")
    pid = inspect(d, unique_name)["State"]["Pid"]  # type: ignore[index]
    d.kill9()
    flag.touch()
    poll(lambda: not Path(f"/proc/{pid}").exists(), what="exit while the daemon is down")
    d.start()
    # the failure is seen at restore and the policy restarts it
    poll(lambda: d.cli("logs", unique_name).stdout.count(b"run") == 2, what="restart after restore")
    poll(lambda: status(d, unique_name) == "running", what="running again")
    assert inspect(d, unique_name)["RestartCount"] == 1
    d.cli("stop", "-t", "0", unique_name)


def test_wait_on_adopted_container(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    run_sh(d, unique_name, "trap 'exit 11' TERM; while true; do sleep 0.1; done")
    d.restart()
    env = {"DOCKER_HOST": d.host, "PATH": "/usr/bin:/bin"}
    waiter = subprocess.Popen([DOCKER_CLI, "wait", unique_name], stdout=subprocess.PIPE, env=env)
    time.sleep(0.3)
    assert waiter.poll() is None
    d.cli("stop", "-t", "5", unique_name)
    out, _ = waiter.communicate(timeout=15)
    assert out.strip() == b"11"


def test_container_in_backoff_across_restart(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    run_sh(d, unique_name, "echo up; exit 2", "--restart", "always")
    poll(lambda: inspect(d, unique_name)["RestartCount"] >= 3, what="a few restarts")  # type: ignore[operator]
    d.kill9()
    d.start()
    before = d.cli("logs", unique_name).stdout.count(b"up")
    poll(
        lambda: d.cli("logs", unique_name).stdout.count(b"up") > before,
        what="restarts after the daemon restart",
    )
    d.cli("stop", "-t", "1", unique_name)
    assert status(d, unique_name) == "exited"
    d.cli("rm", unique_name)


def test_run_rm_removed_after_daemon_restart(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    flag = d.base / f"{unique_name}.go"
    script = f"while [ ! -e /host/{flag.name} ]; do sleep 0.05; done"
    run_sh(d, unique_name, script, "--rm", "-v", f"{d.base}:/host")
    d.kill9()
    d.start()
    assert status(d, unique_name) == "running"
    flag.touch()
    poll(
        lambda: unique_name not in d.cli("ps", "-a", "--format", "{{.Names}}").stdout.decode(),
        what="auto-remove",
    )


def test_run_rm_exited_while_daemon_down_is_removed(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    flag = d.base / f"{unique_name}.go"
    script = f"while [ ! -e /host/{flag.name} ]; do sleep 0.05; done"
    run_sh(d, unique_name, script, "--rm", "-v", f"{d.base}:/host")
    pid = inspect(d, unique_name)["State"]["Pid"]  # type: ignore[index]
    d.kill9()
    flag.touch()
    poll(lambda: not Path(f"/proc/{pid}").exists(), what="exit while the daemon is down")
    d.start()
    poll(
        lambda: unique_name not in d.cli("ps", "-a", "--format", "{{.Names}}").stdout.decode(),
        what="auto-remove",
    )
