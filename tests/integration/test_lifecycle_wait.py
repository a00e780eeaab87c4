"""POST /containers/{id}/wait: conditions, headers before the exit, bad input."""

from __future__ import annotations

import json
import socket
import threading
import time

import docker
import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.root


def raw_request(d: Daemon, request: bytes, timeout: float = 10) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(d.socket))
    s.sendall(request)
    return s


def read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_wait_not_running_on_exited_returns_at_once(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "--name", unique_name, "busybox", "sh", "-c", "exit 4", check=False)
    assert daemon.api.wait(unique_name, condition="not-running", timeout=5) == {
        "Error": None,
        "StatusCode": 4,
    }
    assert daemon.api.wait(unique_name, timeout=5)["StatusCode"] == 4


def test_wait_next_exit_waits_for_the_next_run(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox", "sh", "-c", "sleep 0.3; exit 6")
    result: dict[str, object] = {}

    def waiter() -> None:
        client = docker.APIClient(base_url=daemon.host, timeout=20)
        result.update(client.wait(unique_name, condition="next-exit"))
        client.close()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    assert not result  # created, never started: next-exit must not return yet
    daemon.api.start(unique_name)
    t.join(15)
    assert result == {"Error": None, "StatusCode": 6}


def test_wait_removed(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sh", "-c", "sleep 0.2; exit 2")
    s = raw_request(
        daemon,
        f"POST /v1.47/containers/{unique_name}/wait?condition=removed HTTP/1.1\r\nHost: d\r\n"
        "Content-Length: 0\r\n\r\n".encode(),
    )
    head = read_until(s, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    # the container exits, but the body comes only when it is removed
    deadline = time.monotonic() + 10
    while daemon.api.inspect_container(unique_name)["State"]["Status"] != "exited":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.settimeout(0.3)
    with pytest.raises(TimeoutError):
        s.recv(100)
    s.settimeout(10)
    daemon.cli("rm", unique_name)
    body = read_until(s, b"}")
    assert b'"StatusCode":2' in body
    s.close()


def test_wait_headers_flushed_before_exit(daemon: Daemon, unique_name: str) -> None:
    """docker run waits before start; the 200 status line must arrive while the container still runs."""
    cid = daemon.api.create_container("busybox", ["sh", "-c", "sleep 1; exit 9"], name=unique_name)["Id"]
    s = raw_request(
        daemon,
        f"POST /containers/{cid}/wait?condition=next-exit HTTP/1.1\r\nHost: d\r\n"
        "Content-Length: 0\r\n\r\n".encode(),
    )
    head = read_until(s, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    daemon.api.start(cid)
    assert daemon.api.inspect_container(cid)["State"]["Running"] is True
    rest = head.split(b"\r\n\r\n", 1)[1] + read_until(s, b"0\r\n\r\n")
    size, _, payload = rest.partition(b"\r\n")
    assert json.loads(payload[: int(size, 16)]) == {"Error": None, "StatusCode": 9}
    s.close()


def test_wait_invalid_condition(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox", "true")
    resp = daemon.api._post(
        daemon.api._url("/containers/{0}/wait", unique_name), params={"condition": "bogus"}
    )
    assert resp.status_code == 400
    assert resp.json()["message"] == 'invalid condition: "bogus"'


def test_wait_unknown_container(daemon: Daemon) -> None:
    resp = daemon.api._post(daemon.api._url("/containers/{0}/wait", "nope-404"))
    assert resp.status_code == 404
    assert resp.json()["message"] == "No such container: nope-404"
