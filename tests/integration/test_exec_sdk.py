"""Exec through the docker SDK and the raw API: exec_run variants, ExecInspect, errors, resize, ExecIDs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from tests.conftest import Daemon

# docker-py leaves the hijacked socket of exec_run/exec_start to the garbage collector (also against dockerd).
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def box(daemon: Daemon, unique_name: str) -> Iterator[Container]:
    """A running busybox container."""
    c = daemon.client.containers.run("busybox", ["sleep", "600"], name=unique_name, detach=True)
    yield c
    c.remove(force=True)


def test_exec_run_demux(box: Container) -> None:
    result = box.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"], demux=True)
    assert result.exit_code == 4
    assert result.output == (b"out\n", b"err\n")


def test_exec_run_stream(box: Container) -> None:
    result = box.exec_run(["sh", "-c", "echo 1; sleep 0.2; echo 2"], stream=True)
    assert b"".join(result.output) == b"1\n2\n"


def test_exec_run_tty(box: Container) -> None:
    result = box.exec_run(["sh", "-c", "echo hi; tty"], tty=True)
    assert result.exit_code == 0
    assert result.output == b"hi\r\n/dev/pts/0\r\n"


def test_exec_run_workdir_user_environment(box: Container) -> None:
    result = box.exec_run(
        ["sh", "-c", "pwd; id -u; echo $A$B"], workdir="/etc", user="2000", environment={"A": "x", "B": "y"}
    )
    assert result.exit_code == 0
    assert result.output == b"/etc\n2000\nxy\n"


def test_exec_run_privileged_gets_more_capabilities(box: Container) -> None:
    plain = box.exec_run(["sh", "-c", "grep CapEff /proc/self/status"]).output
    privileged = box.exec_run(["sh", "-c", "grep CapEff /proc/self/status"], privileged=True).output
    assert int(privileged.split()[1], 16) > int(plain.split()[1], 16)


def test_exec_inspect_fields(daemon: Daemon, box: Container) -> None:
    api = daemon.api
    exec_id = api.exec_create(box.id, ["sh", "-c", "exit 5"], user="root")["Id"]
    before = api.exec_inspect(exec_id)
    assert before["ID"] == exec_id
    assert before["Running"] is False
    assert before["ExitCode"] is None
    assert before["Pid"] == 0
    assert before["ContainerID"] == box.id
    assert before["ProcessConfig"] == {"tty": False, "entrypoint": "sh", "arguments": ["-c", "exit 5"],
                                       "privileged": False, "user": "root"}  # fmt: skip
    assert (before["OpenStdin"], before["OpenStdout"], before["OpenStderr"]) == (False, True, True)
    assert before["CanRemove"] is False
    assert before["DetachKeys"] == ""
    api.exec_start(exec_id)
    after = api.exec_inspect(exec_id)
    assert after["Running"] is False
    assert after["ExitCode"] == 5
    assert after["Pid"] > 0


def test_exec_running_state_and_container_exec_ids(daemon: Daemon, box: Container) -> None:
    api = daemon.api
    exec_id = api.exec_create(box.id, ["sleep", "5"])["Id"]
    assert exec_id in (api.inspect_container(box.id)["ExecIDs"] or [])
    api.exec_start(exec_id, detach=True)
    info = api.exec_inspect(exec_id)
    assert info["Running"] is True
    assert info["ExitCode"] is None
    deadline = time.monotonic() + 10
    while not api.exec_inspect(exec_id)["Pid"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the runtime writes the pid once the process runs
    box.kill()
    deadline = time.monotonic() + 10
    while api.exec_inspect(exec_id)["Running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.exec_inspect(exec_id)["ExitCode"] == 137
    assert api.inspect_container(box.id)["ExecIDs"] is None


def test_exec_start_twice_is_a_conflict(daemon: Daemon, box: Container) -> None:
    api = daemon.api
    exec_id = api.exec_create(box.id, ["true"])["Id"]
    api.exec_start(exec_id)
    with pytest.raises(docker.errors.APIError) as err:
        api.exec_start(exec_id)
    assert err.value.status_code == 409
    assert f"Error: Exec command {exec_id} has already run" in str(err.value)


def test_exec_errors(daemon: Daemon, box: Container) -> None:
    api = daemon.api
    with pytest.raises(docker.errors.NotFound, match="No such exec instance: nope"):
        api.exec_inspect("nope")
    with pytest.raises(docker.errors.NotFound, match="No such exec instance: nope"):
        api.exec_start("nope")
    resp = api.post(api._url("/containers/{0}/exec", box.id), json={"AttachStdout": True})
    assert resp.status_code == 400
    assert resp.json()["message"] == "No exec command specified"
    with pytest.raises(docker.errors.NotFound, match="No such container"):
        api.exec_create("no-such-container-xyz", ["true"])


def test_exec_gone_with_its_container(daemon: Daemon, unique_name: str) -> None:
    c = daemon.client.containers.run("busybox", ["sleep", "600"], name=unique_name, detach=True)
    exec_id = daemon.api.exec_create(c.id, ["true"])["Id"]
    c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        daemon.api.exec_inspect(exec_id)


def test_exec_stopped_container_conflict(daemon: Daemon, unique_name: str) -> None:
    c = daemon.client.containers.create("busybox", ["true"], name=unique_name)
    try:
        with pytest.raises(docker.errors.APIError) as err:
            daemon.api.exec_create(c.id, ["true"])
        assert err.value.status_code == 409
        assert f"Container {c.id} is not running" in str(err.value)
    finally:
        c.remove(force=True)


def test_exec_resize_tty(daemon: Daemon, box: Container) -> None:
    assert_resize_works(daemon, box.id)


def assert_resize_works(daemon: Daemon, container_id: str) -> None:
    """A tty exec sees the size set by ExecResize (shared with the runc variant)."""
    api = daemon.api
    exec_id = api.exec_create(container_id, ["sh", "-c", "sleep 0.5; stty size"], tty=True)["Id"]
    sock = api.exec_start(exec_id, tty=True, socket=True)
    api.exec_resize(exec_id, height=33, width=101)
    out = _read_all(sock)
    assert b"33 101" in out
    assert api.exec_inspect(exec_id)["ExitCode"] == 0


def _read_all(sock: Any) -> bytes:
    """Read a hijacked SDK socket (a ``SocketIO`` over the connection) to its end, then close both."""
    raw: socket.socket = sock._sock
    raw.settimeout(20)
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    sock.close()
    raw.close()
    return data


def test_exec_stdin_through_sdk_socket(daemon: Daemon, box: Container) -> None:
    api = daemon.api
    exec_id = api.exec_create(box.id, ["cat"], stdin=True, tty=True)["Id"]
    sock = api.exec_start(exec_id, tty=True, socket=True)
    raw = sock._sock
    raw.sendall(b"hello\n")
    time.sleep(0.2)
    raw.sendall(b"\x04")  # end of input on a terminal
    out = _read_all(sock)
    assert b"hello\r\nhello\r\n" in out  # the terminal echoes, then cat prints
    assert api.exec_inspect(exec_id)["ExitCode"] == 0
