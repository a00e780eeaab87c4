"""Containers survive the daemon: crash (SIGKILL) and clean restart, exits while the daemon was down, logs."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DOCKER_CLI, Daemon, poll

pytestmark = [pytest.mark.root, pytest.mark.slow]


def state(d: Daemon, name: str) -> dict[str, object]:
    return d.api.inspect_container(name)["State"]  # type: ignore[no-any-return]


def logs(d: Daemon, name: str) -> bytes:
    return d.cli("logs", name).stdout


def bounce(d: Daemon, how: str) -> None:
    if how == "kill9":
        d.kill9()
    else:
        d.stop()
    d.start()


@pytest.mark.parametrize("how", ["kill9", "restart"])
def test_running_container_survives_daemon(fresh_daemon: Daemon, unique_name: str, how: str) -> None:
    d = fresh_daemon
    script = (
        "echo before; read line; echo got:$line; trap 'echo bye; exit 3' TERM; while true; do sleep 0.1; done"
    )
    d.cli("run", "-d", "-i", "--name", unique_name, "busybox", "sh", "-c", script)
    poll(lambda: b"before" in logs(d, unique_name), what="first output")
    pid_before = state(d, unique_name)["Pid"]

    bounce(d, how)

    st = state(d, unique_name)
    assert st["Status"] == "running" and st["Running"] is True
    assert st["Pid"] == pid_before
    listed = d.cli("ps", "--format", "{{.Names}} {{.State}}").stdout.decode()
    assert f"{unique_name} running" in listed
    # attach works after the restart: send a line through stdin, see its echo in the logs
    attach = subprocess.Popen(
        [DOCKER_CLI, "-H", d.host, "attach", "--sig-proxy=false", unique_name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert attach.stdin is not None
        attach.stdin.write(b"hello\n")
        attach.stdin.flush()
        poll(lambda: b"got:hello" in logs(d, unique_name), what="output after the restart")
    finally:
        attach.kill()
        attach.communicate(timeout=10)
    assert logs(d, unique_name).startswith(b"before\ngot:hello\n")
    d.cli("stop", "-t", "5", unique_name)
    st = state(d, unique_name)
    assert st["Status"] == "exited" and st["ExitCode"] == 3
    assert logs(d, unique_name).endswith(b"bye\n")


def test_docker_attach_streams_after_crash(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    script = "i=0; while true; do echo n$i; i=$((i+1)); sleep 0.1; done"
    d.cli("run", "-d", "--name", unique_name, "busybox", "sh", "-c", script)
    poll(lambda: b"n1\n" in logs(d, unique_name), what="output")
    d.kill9()
    d.start()
    attach = subprocess.Popen(
        [DOCKER_CLI, "-H", d.host, "attach", "--no-stdin", unique_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert attach.stdout is not None
        line = attach.stdout.readline()
        assert line.startswith(b"n"), line
    finally:
        attach.kill()
        attach.communicate(timeout=10)


@pytest.mark.parametrize("how", ["kill9", "restart"])
def test_exit_while_daemon_down(fresh_daemon: Daemon, unique_name: str, how: str) -> None:
    d = fresh_daemon
    flag = d.base / f"{unique_name}.go"
    script = f"echo start; while [ ! -e /host/{flag.name} ]; do sleep 0.05; done; echo end; exit 42"
    d.cli("run", "-d", "-v", f"{d.base}:/host", "--name", unique_name, "busybox", "sh", "-c", script)
    poll(lambda: b"start" in logs(d, unique_name), what="start")
    pid = state(d, unique_name)["Pid"]
    assert isinstance(pid, int) and pid > 0
    if how == "kill9":
        d.kill9()
    else:
        d.stop()
    flag.touch()
    poll(lambda: not Path(f"/proc/{pid}").exists(), what="the container to exit while the daemon is down")
    d.start()
    poll(lambda: state(d, unique_name)["Status"] == "exited", what="exited state")
    st = state(d, unique_name)
    assert st["ExitCode"] == 42 and st["Running"] is False and st["Pid"] == 0
    assert logs(d, unique_name) == b"start\nend\n"
    assert d.cli("wait", unique_name).stdout.strip() == b"42"
    listed = d.cli("ps", "-a", "--filter", f"name={unique_name}", "--format", "{{.Status}}").stdout.decode()
    assert listed.startswith("Exited (42)")


def test_stopped_logs_survive_restarts(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    proc = d.cli(
        "run", "--name", unique_name, "busybox", "sh", "-c", "echo out; echo err >&2; exit 5", check=False
    )
    assert proc.returncode == 5
    d.restart()
    d.kill9()
    d.start()
    out = d.cli("logs", unique_name)
    assert out.stdout == b"out\n" and out.stderr == b"err\n"
    assert state(d, unique_name)["ExitCode"] == 5
    d.cli("start", "-a", unique_name, check=False)
    assert d.cli("logs", unique_name).stdout == b"out\nout\n"


def test_daemon_answers_while_containers_run(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    d.cli("run", "-d", "--name", unique_name, "busybox", "sleep", "60")
    d.kill9()
    d.start()
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(d.socket))
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    d.cli("kill", unique_name)
    assert state(d, unique_name)["ExitCode"] == 137
