"""Restart policies with the real CLI: on-failure:N, always, unless-stopped, no, and --rm conflicts."""

from __future__ import annotations

import time

import docker
import pytest

from tests.conftest import Daemon, poll

pytestmark = pytest.mark.root


def inspect(d: Daemon, name: str) -> dict[str, object]:
    return d.api.inspect_container(name)  # type: ignore[no-any-return]


def test_on_failure_restarts_exactly_n_times(daemon: Daemon, unique_name: str) -> None:
    daemon.cli(
        "run",
        "-d",
        "--restart",
        "on-failure:2",
        "--name",
        unique_name,
        "busybox",
        "sh",
        "-c",
        "echo x; exit 3",
    )
    poll(lambda: daemon.cli("logs", unique_name).stdout.count(b"x") == 3, what="three runs")
    poll(lambda: inspect(daemon, unique_name)["State"]["Status"] == "exited", what="final exit")  # type: ignore[index]
    # no further restart comes after the limit
    time.sleep(0.5)
    info = inspect(daemon, unique_name)
    assert info["RestartCount"] == 2
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 3  # type: ignore[index]
    assert daemon.cli("logs", unique_name).stdout == b"x\nx\nx\n"


def test_on_failure_does_not_restart_success(daemon: Daemon, unique_name: str) -> None:
    proc = daemon.cli("run", "--restart", "on-failure", "--name", unique_name, "busybox", "true", check=False)
    assert proc.returncode == 0
    time.sleep(0.3)
    info = inspect(daemon, unique_name)
    assert info["RestartCount"] == 0 and info["State"]["Status"] == "exited"  # type: ignore[index]


def test_always_restarts_and_stop_is_final(daemon: Daemon, unique_name: str) -> None:
    daemon.cli(
        "run", "-d", "--restart", "always", "--name", unique_name, "busybox", "sh", "-c", "echo r; sleep 0.2"
    )
    poll(lambda: inspect(daemon, unique_name)["RestartCount"] >= 2, what="two restarts")  # type: ignore[operator]
    daemon.cli("stop", "-t", "1", unique_name)
    st = inspect(daemon, unique_name)["State"]
    assert st["Status"] == "exited"  # type: ignore[index]
    count = inspect(daemon, unique_name)["RestartCount"]
    time.sleep(1.0)
    info = inspect(daemon, unique_name)
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == count  # type: ignore[index]


def test_no_policy_does_not_restart(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--restart", "no", "--name", unique_name, "busybox", "sh", "-c", "exit 1")
    poll(lambda: inspect(daemon, unique_name)["State"]["Status"] == "exited", what="exit")  # type: ignore[index]
    time.sleep(0.4)
    info = inspect(daemon, unique_name)
    assert info["RestartCount"] == 0 and info["State"]["Status"] == "exited"  # type: ignore[index]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "no"  # type: ignore[index]


@pytest.mark.slow
def test_always_vs_unless_stopped_across_daemon_restart(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    always, unless = unique_name + "-a", unique_name + "-u"
    running_always, running_unless = unique_name + "-ra", unique_name + "-ru"
    for name, policy in (
        (always, "always"),
        (unless, "unless-stopped"),
        (running_always, "always"),
        (running_unless, "unless-stopped"),
    ):
        d.cli("run", "-d", "--restart", policy, "--name", name, "busybox", "sleep", "600")
    d.cli("stop", "-t", "1", always, unless)
    for name in (always, unless):
        assert inspect(d, name)["State"]["Status"] == "exited"  # type: ignore[index]
    d.restart()
    assert inspect(d, always)["State"]["Status"] == "running"  # type: ignore[index]
    assert inspect(d, unless)["State"]["Status"] == "exited"  # type: ignore[index]
    assert inspect(d, running_always)["State"]["Status"] == "running"  # type: ignore[index]
    assert inspect(d, running_unless)["State"]["Status"] == "running"  # type: ignore[index]
    d.cli("rm", "-f", always, unless, running_always, running_unless)


def test_rm_with_restart_is_rejected(daemon: Daemon, unique_name: str) -> None:
    proc = daemon.cli(
        "run", "--rm", "--restart", "always", "--name", unique_name, "busybox", "true", check=False
    )
    assert proc.returncode != 0
    assert b"conflicting options" in proc.stderr.lower() or b"can't create" in proc.stderr.lower()
    # the API's own check, past the CLI
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.create_container(
            "busybox",
            "true",
            name=unique_name,
            host_config=daemon.api.create_host_config(auto_remove=True, restart_policy={"Name": "always"}),
        )
    assert err.value.status_code == 400
    assert "can't create 'AutoRemove' container with restart policy" in str(err.value.explanation)
