"""Container logs: stream separation, tail, timestamps, since/until, follow, TTY output."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime

from tests.conftest import DOCKER_CLI, Daemon

TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z) (.*)$")


def finished(daemon: Daemon, *args: str) -> str:
    """``docker run -d ARGS``, waited for; returns the id."""
    cid = daemon.cli("run", "-d", *args).stdout.decode().strip()
    daemon.api.wait(cid)
    return cid


def test_stdout_stderr_separated(daemon: Daemon) -> None:
    cid = finished(daemon, "busybox", "sh", "-c", "echo out; echo err >&2; echo out2")
    assert daemon.api.logs(cid, stdout=True, stderr=False) == b"out\nout2\n"
    assert daemon.api.logs(cid, stdout=False, stderr=True) == b"err\n"
    proc = daemon.cli("logs", cid)
    assert proc.stdout == b"out\nout2\n"
    assert proc.stderr == b"err\n"


def test_logs_without_streams_is_400(daemon: Daemon) -> None:
    cid = finished(daemon, "busybox", "true")
    resp = daemon.api.get(daemon.api._url("/containers/{0}/logs", cid))
    assert resp.status_code == 400
    assert "you must choose at least one stream" in resp.json()["message"]


def test_tail(daemon: Daemon) -> None:
    cid = finished(daemon, "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo $i; done")
    assert daemon.cli("logs", "--tail", "2", cid).stdout == b"4\n5\n"
    assert daemon.cli("logs", "--tail", "0", cid).stdout == b""
    assert daemon.cli("logs", "--tail", "all", cid).stdout == b"1\n2\n3\n4\n5\n"
    assert daemon.api.logs(cid, tail=1) == b"5\n"


def test_timestamps(daemon: Daemon) -> None:
    before = time.time()
    cid = finished(daemon, "busybox", "sh", "-c", "echo a; echo b")
    lines = daemon.cli("logs", "-t", cid).stdout.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, (b"a", b"b"), strict=True):
        m = TIMESTAMP.match(line)
        assert m, line
        assert m.group(2) == text
        stamp = m.group(1).decode()
        base, _, frac = stamp.rstrip("Z").partition(".")
        ts = datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + frac)
        assert before - 1 < ts < time.time() + 1


def test_since_and_until(daemon: Daemon) -> None:
    cid = finished(daemon, "busybox", "sh", "-c", "echo early; sleep 1.2; echo late")
    stamps = [TIMESTAMP.match(line) for line in daemon.cli("logs", "-t", cid).stdout.splitlines()]
    assert all(stamps)
    early_ts, late_ts = (m.group(1).decode() for m in stamps if m)
    assert daemon.cli("logs", "--since", late_ts, cid).stdout == b"late\n"
    assert daemon.cli("logs", "--until", early_ts, cid).stdout == b"early\n"
    epoch = _epoch(late_ts) - 0.5
    assert daemon.cli("logs", "--since", f"{epoch:.3f}", cid).stdout == b"late\n"
    assert daemon.cli("logs", "--until", f"{epoch:.3f}", cid).stdout == b"early\n"
    assert daemon.cli("logs", "--since", "1h", cid).stdout == b"early\nlate\n"


def _epoch(stamp: str) -> float:
    base, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + frac)


def test_follow_until_exit(daemon: Daemon) -> None:
    cid = daemon.cli("run", "-d", "-i", "busybox", "sh", "-c", "echo one; read x; echo two").stdout.decode()
    cid = cid.strip()
    env = {"DOCKER_HOST": daemon.host, "PATH": "/usr/bin:/bin"}
    follower = subprocess.Popen([DOCKER_CLI, "logs", "-f", cid], stdout=subprocess.PIPE, env=env)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"one\n"
        sock = daemon.api.attach_socket(cid, params={"stdin": 1, "stream": 1})
        try:
            sock._sock.sendall(b"go\n")
            assert follower.stdout.readline() == b"two\n"
            assert follower.wait(10) == 0  # the follow ends when the container exits
        finally:
            sock._sock.close()
            sock.close()
        assert follower.stdout.read() == b""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        if follower.stdout is not None:
            follower.stdout.close()


def test_follow_of_exited_container_returns(daemon: Daemon) -> None:
    cid = finished(daemon, "busybox", "echo", "done")
    assert daemon.cli("logs", "-f", cid, timeout=10).stdout == b"done\n"


def test_tty_logs_are_raw(daemon: Daemon) -> None:
    cid = finished(daemon, "-t", "busybox", "sh", "-c", "echo out; echo err >&2")
    raw = daemon.api.logs(cid, stdout=True, stderr=True)
    assert raw == b"out\r\nerr\r\n"
    resp = daemon.api.get(daemon.api._url("/containers/{0}/logs", cid), params={"stdout": 1, "stderr": 1})
    assert resp.content == b"out\r\nerr\r\n"
    assert "raw-stream" in resp.headers["Content-Type"]


def test_non_tty_logs_are_multiplexed(daemon: Daemon) -> None:
    cid = finished(daemon, "busybox", "sh", "-c", "echo out; echo err >&2")
    resp = daemon.api.get(daemon.api._url("/containers/{0}/logs", cid), params={"stdout": 1, "stderr": 1})
    assert resp.content == b"\x01\x00\x00\x00\x00\x00\x00\x04out\n\x02\x00\x00\x00\x00\x00\x00\x04err\n"
    assert resp.headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
