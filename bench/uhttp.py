"""A keep-alive HTTP/1.1 client over a unix socket, for the Docker Engine API.

Built on the standard library's ``http.client`` (it parses chunked and length-delimited bodies correctly)
with ``connect`` redirected to AF_UNIX; the docker SDK would add its own per-request overhead (requests,
urllib3 pools) to every latency sample, and the benchmark wants the daemon's time, not the client's.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class HTTPStatusError(Exception):
    """The daemon answered with a status the caller did not expect."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        text = body[:300].decode("utf-8", "replace").strip()
        super().__init__(f"{method} {path} -> HTTP {status}: {text}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, sock_path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.sock_path = sock_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.sock_path)
        self.sock = sock


class UnixHTTP:
    """One keep-alive connection to a daemon's unix socket; reconnects once on a stale connection."""

    def __init__(self, sock_path: str, timeout: float = 30.0) -> None:
        self.sock_path = sock_path
        self.timeout = timeout
        self._conn: _UnixConnection | None = None

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: Any = None, expect: tuple[int, ...] | None = None
    ) -> tuple[int, bytes]:
        """Send one request and read the whole response.

        Args:
            method: HTTP method.
            path: Path with query string.
            body: A JSON-serialisable body, or None.
            expect: Accepted status codes; None accepts any.

        Returns:
            (status, body bytes).

        Raises:
            HTTPStatusError: The status is not in ``expect``.
            OSError: The socket failed twice.
        """
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(2):
            fresh = self._conn is None
            if self._conn is None:
                self._conn = _UnixConnection(self.sock_path, self.timeout)
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh or attempt:
                    raise
                continue  # a keep-alive connection the daemon closed meanwhile: retry on a new one
            if resp.will_close:
                self.close()
            if expect is not None and resp.status not in expect:
                raise HTTPStatusError(method, path, resp.status, data)
            return resp.status, data
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        """Send a request and decode its JSON answer (None for an empty body)."""
        _, data = self.request(method, path, body, expect)
        return json.loads(data) if data else None


def ping(sock_path: str, timeout: float = 1.0) -> bool:
    """True when something answers ``GET /_ping`` with 200 on ``sock_path``.

    Only the status line is read, so a readiness check does not hang on a malformed head.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sock_path)
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        sock.close()
