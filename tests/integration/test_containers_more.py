"""Edge cases of create/start/stop that users hit: relative workdir, stop-timeout, start -a, image labels."""

from __future__ import annotations

import time

import docker.errors
import pytest

from tests.conftest import Daemon


def test_relative_workdir_rejected(daemon: Daemon) -> None:
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.create_container("busybox", working_dir="rel/dir")
    assert err.value.status_code == 400
    assert "the working directory 'rel/dir' is invalid, it needs to be an absolute path" in str(
        err.value.explanation
    )


def test_stop_timeout_from_create(daemon: Daemon, unique_name: str) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    daemon.cli("run", "-d", "--name", unique_name, "--stop-timeout", "1", "busybox", "sh", "-c", script)
    assert daemon.api.inspect_container(unique_name)["Config"]["StopTimeout"] == 1
    deadline = time.monotonic() + 10
    while b"ready" not in daemon.cli("logs", unique_name).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    t0 = time.monotonic()
    daemon.cli("stop", unique_name)
    assert 0.9 <= time.monotonic() - t0 < 5
    assert daemon.api.inspect_container(unique_name)["State"]["ExitCode"] == 137


def test_stop_timeout_wrong_type(daemon: Daemon) -> None:
    resp = daemon.api.post(
        daemon.api._url("/containers/create"), json={"Image": "busybox", "StopTimeout": "x"}
    )
    assert resp.status_code == 400
    assert "StopTimeout" in resp.json()["message"]


def test_start_attach(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox", "sh", "-c", "echo hi; echo err >&2; exit 2")
    proc = daemon.cli("start", "-a", unique_name, check=False)
    assert proc.returncode == 2
    assert proc.stdout == b"hi\n"
    assert proc.stderr == b"err\n"


def test_start_attach_interactive(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "-i", "--name", unique_name, "busybox", "cat")
    proc = daemon.cli("start", "-ai", unique_name, input=b"echoed\n")
    assert proc.stdout == b"echoed\n"


def test_name_with_leading_slash(daemon: Daemon, unique_name: str) -> None:
    c = daemon.api.create_container("busybox", name="/" + unique_name)
    assert daemon.api.inspect_container(unique_name)["Id"] == c["Id"]


def test_rename_to_same_name(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox")
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.rename(unique_name, unique_name)
    assert err.value.status_code == 400
    assert "Renaming a container with the same name as its current name" in str(err.value.explanation)


def test_rename_running_container(daemon: Daemon, unique_name: str) -> None:
    cid = daemon.cli("run", "-d", "--name", unique_name, "busybox", "sleep", "60").stdout.decode().strip()
    daemon.cli("rename", cid, unique_name + "-r")
    assert (
        daemon.cli("ps", "--filter", "id=" + cid, "--format", "{{.Names}}").stdout
        == (unique_name + "-r\n").encode()
    )
    daemon.api.remove_container(cid, force=True)


def test_warnings_is_a_list(daemon: Daemon) -> None:
    c = daemon.api.create_container("busybox")
    assert isinstance(c["Warnings"], list)
    daemon.api.remove_container(c["Id"])


def test_remove_unknown_is_404(daemon: Daemon) -> None:
    proc = daemon.cli("rm", "nosuch-container-abc", check=False)
    assert proc.returncode == 1
    assert b"No such container: nosuch-container-abc" in proc.stderr
