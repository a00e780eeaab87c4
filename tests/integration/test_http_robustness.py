"""The HTTP front end under odd and hostile clients: versions, unknown paths, malformed requests, limits,
idle and pipelining clients, many connections, and clients that vanish in the middle of a stream."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from tests.conftest import Daemon

TOO_OLD = (
    "client version 1.12 is too old. Minimum supported API version is 1.24, "
    "please upgrade your client to a newer version"
)
TOO_NEW = "client version 1.99 is too new. Maximum supported API version is 1.47"


def connect(d: Daemon, timeout: float = 10) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(d.socket))
    return s


class Reader:
    """Reads HTTP/1.1 responses (Content-Length or chunked) off one socket."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        """Status code and headers (lower-cased names)."""
        status = int(self._take_line().split(b" ")[1])
        headers: dict[str, str] = {}
        while line := self._take_line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One whole response."""
        status, headers = self.head()
        if head_request or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._take_line(), 16):
                body += self._take(size)
                self._take(2)
            self._take(2)
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))


def request(
    d: Daemon, method: str, path: str, body: bytes = b"", head_request: bool = False
) -> tuple[int, dict[str, str], bytes]:
    with connect(d) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        return Reader(s).response(head_request)


# -- versions and paths


@pytest.mark.parametrize("path", ["/version", "/v1.47/version", "/v1.24/version", "/v1.40/version"])
def test_versioned_and_unversioned_paths(daemon: Daemon, path: str) -> None:
    status, headers, body = request(daemon, "GET", path)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["ApiVersion"] == "1.47"


@pytest.mark.parametrize(
    ("path", "message"),
    [("/v1.12/version", TOO_OLD), ("/v1.99/version", TOO_NEW), ("/v1.12/containers/json", TOO_OLD)],
)
def test_version_out_of_window(daemon: Daemon, path: str, message: str) -> None:
    status, _, body = request(daemon, "GET", path)
    assert status == 400
    assert json.loads(body) == {"message": message}


@pytest.mark.parametrize("path", ["/nope", "/v1.47/nope", "/containers/x/frobnicate", "/v1.47/"])
def test_unknown_path(daemon: Daemon, path: str) -> None:
    status, headers, body = request(daemon, "GET", path)
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"message": "page not found"}


def test_head_ping_headers(daemon: Daemon) -> None:
    with connect(daemon) as s:
        # HEAD then GET on one keep-alive connection: a body after HEAD would corrupt the second answer
        s.sendall(b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        r = Reader(s)
        status, headers, _ = r.response(head_request=True)
        assert status == 200
        assert headers["api-version"] == "1.47"
        assert headers["ostype"] == "linux"
        assert headers["docker-experimental"] == "false"
        assert headers["server"].startswith("Docker/")
        assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert headers["pragma"] == "no-cache"
        status, headers, body = r.response()
        assert status == 200 and body == b"OK"
        assert headers["api-version"] == "1.47"


def test_docker_cli_negotiates(daemon: Daemon) -> None:
    out = daemon.cli("version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}").stdout.decode()
    assert out.split() == ["1.47", "1.47"]


# -- malformed input and limits


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        b"GET / HTTP/9.9\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost d\r\n\r\n",
        b"POST /containers/create HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_request(daemon: Daemon, garbage: bytes) -> None:
    with connect(daemon) as s:
        s.sendall(garbage)
        status, _, body = Reader(s).response()
        assert status == 400
        assert "message" in json.loads(body)
        assert s.recv(100) == b""  # and the connection is closed
    assert daemon.ping()


def test_oversized_headers(daemon: Daemon) -> None:
    with connect(daemon) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n" + b"X-Big: " + b"a" * (128 << 10) + b"\r\n\r\n")
        status, _, _ = Reader(s).response()
        assert status == 431
    with connect(daemon) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1000)) + b"\r\n")
        assert Reader(s).response()[0] == 431
    with connect(daemon) as s:
        s.sendall(b"GET /_ping?" + b"a" * (128 << 10) + b" HTTP/1.1\r\n\r\n")
        assert Reader(s).response()[0] == 431
    assert daemon.ping()


def test_oversized_json_body(daemon: Daemon) -> None:
    size = 80 << 20
    with connect(daemon, timeout=30) as s:
        s.sendall(
            b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        chunk = b" " * (1 << 20)
        sent = 0
        try:
            while sent < size:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was in
        status, _, body = Reader(s).response()
        assert status == 413
        assert "too large" in json.loads(body)["message"]
    assert daemon.ping()


def test_bad_json_body(daemon: Daemon) -> None:
    status, _, body = request(daemon, "POST", "/containers/create", b"{not json")
    assert status == 400 and json.loads(body)["message"]


# -- connection behaviour


def test_silent_clients_do_not_block_others(daemon: Daemon) -> None:
    silent = [connect(daemon) for _ in range(5)]
    partial = connect(daemon)
    partial.sendall(b"GET /_pi")
    half_body = connect(daemon)
    half_body.sendall(b"POST /containers/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    try:
        started = time.monotonic()
        for _ in range(20):
            assert request(daemon, "GET", "/_ping")[0] == 200
        assert time.monotonic() - started < 5
        # the partial request still completes once the rest arrives
        partial.sendall(b"ng HTTP/1.1\r\nHost: d\r\n\r\n")
        assert Reader(partial).response()[2] == b"OK"
    finally:
        for s in [*silent, partial, half_body]:
            s.close()


def test_pipelined_requests_answered_in_order(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox", "true")
    reqs = [
        b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n",
        f"GET /v1.47/containers/{unique_name}/json HTTP/1.1\r\nHost: d\r\n\r\n".encode(),
        f"POST /containers/{unique_name}/stop HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n".encode(),
        b"GET /v1.99/_ping HTTP/1.1\r\nHost: d\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nHost: d\r\n\r\n",
        b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\n\r\n{x}",
        b"GET /version HTTP/1.1\r\nHost: d\r\n\r\n",
        b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    ]
    with connect(daemon) as s:
        s.sendall(b"".join(reqs))
        r = Reader(s)
        assert r.response()[2] == b"OK"
        status, _, body = r.response()
        assert status == 200 and json.loads(body)["Name"] == "/" + unique_name
        assert r.response()[0] == 304
        status, _, body = r.response()
        assert status == 400 and json.loads(body) == {"message": TOO_NEW}
        assert r.response()[0] == 404
        assert r.response()[0] == 400
        status, _, body = r.response()
        assert status == 200 and "ApiVersion" in json.loads(body)
        assert r.response(head_request=True)[0] == 200
        assert r.response()[2] == b"OK"
        assert s.recv(10) == b""  # Connection: close honoured after the last one


def test_malformed_request_behind_a_running_one_is_answered_after_it(
    daemon: Daemon, unique_name: str
) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sleep", "1")
    with connect(daemon, timeout=30) as s:
        s.sendall(f"POST /containers/{unique_name}/wait HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"
                  "GARBAGE\r\n\r\n".encode())  # fmt: skip
        r = Reader(s)
        status, _, body = r.response()  # the wait's answer first, a second later
        assert status == 200 and json.loads(body)["StatusCode"] == 0
        status, _, body = r.response()
        assert status == 400 and "malformed HTTP request" in json.loads(body)["message"]
        assert s.recv(100) == b""
    assert daemon.ping()


def test_many_concurrent_pings(daemon: Daemon) -> None:
    conns = [connect(daemon) for _ in range(200)]
    try:
        for s in conns:
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        for s in conns:
            assert Reader(s).response()[2] == b"OK"
        # and each keeps its connection alive for another request
        for s in conns[::10]:
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            assert Reader(s).response()[0] == 200
    finally:
        for s in conns:
            s.close()


# -- clients vanishing mid-stream


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, at_most: int, timeout: float = 10) -> int:
    """The daemon's fd count once closed connections are processed (polls until <= at_most)."""
    deadline = time.monotonic() + timeout
    count = fd_count(pid)
    while count > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
        count = fd_count(pid)
    return count


def _stream_until_tick(d: Daemon, request: str, status: int) -> None:
    """Send ``request``, expect ``status``, read until the container's first "tick" arrives, then drop."""
    with connect(d) as s:
        s.sendall(request.encode())
        r = Reader(s)
        assert r.head()[0] == status
        while b"tick" not in r.buf:
            r._fill()


def _logs_follow(d: Daemon, name: str) -> None:
    _stream_until_tick(
        d, f"GET /containers/{name}/logs?follow=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: d\r\n\r\n", 200
    )


def _attach(d: Daemon, name: str) -> None:
    _stream_until_tick(
        d,
        f"POST /containers/{name}/attach?stream=1&stdout=1&stdin=1 HTTP/1.1\r\nHost: d\r\n"
        "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
        101,
    )


def _wait(d: Daemon, name: str) -> None:
    with connect(d) as s:
        s.sendall(f"POST /containers/{name}/wait HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n".encode())
        assert Reader(s).head()[0] == 200


@pytest.mark.root
@pytest.mark.slow
def test_disconnects_mid_stream_leak_nothing(fresh_daemon: Daemon, unique_name: str) -> None:
    d = fresh_daemon
    script = "while true; do echo tick; sleep 0.02; done"
    d.cli("run", "-d", "-i", "--name", unique_name, "busybox", "sh", "-c", script)
    silent = unique_name + "-quiet"  # a follower of a container that prints nothing more must end too
    d.cli("run", "-d", "--name", silent, "busybox", "sh", "-c", "echo tick; exec sleep 600")
    assert d.proc is not None
    pid = d.proc.pid
    for client in (_logs_follow, _attach, _wait):  # warm up: lazily opened files, caches
        client(d, unique_name)
    _logs_follow(d, silent)
    baseline = settled_fd_count(pid, 0, timeout=1)
    for _ in range(50):
        _logs_follow(d, unique_name)
        _logs_follow(d, silent)
        _attach(d, unique_name)
        _wait(d, unique_name)
    after = settled_fd_count(pid, baseline + 2)
    assert after <= baseline + 2, f"fds grew from {baseline} to {after}"
    assert d.ping()
    state = d.api.inspect_container(unique_name)["State"]
    assert state["Running"] is True
    # the container's stdin was not closed by the vanished attach clients, and output still flows to logs
    d.cli("stop", "-t", "1", unique_name)
    assert d.api.inspect_container(unique_name)["State"]["Status"] == "exited"
