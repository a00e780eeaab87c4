"""Requests answered before their body was read: refused by the policy, naming an unknown container, or too
large. The client gets the answer at once; then, as Go's net/http server (dockerd) does, the connection
either goes on (a small unread rest is read and dropped) or is closed cleanly after the answer
(``Connection: close``), never left hanging with an unread body and never reset before the answer arrived."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import Daemon, _base_dir
from tests.integration.test_http_robustness import Reader, connect

PROMPT = 5.0  # seconds: "at once", with room for a loaded two-core machine
BIG = 50 << 20
DENIED = "authorization denied by rule 'admins': operation ImageCreate is not allowed"

# Root may do everything but import images; callers that match no rule (plain TCP) are allowed everything.
POLICY = """
mode = "enforce"
default = "allow"
[[rules]]
name = "admins"
match.uids = [0]
allow = ["*"]
deny = ["ImageCreate"]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def d(seed_root: Path) -> Iterator[tuple[Daemon, int]]:
    """A daemon with the policy above, on its unix socket and on plain TCP (where an RST would show)."""
    base = _base_dir()
    (base / "policy.toml").write_text(POLICY)
    port = _free_port()
    daemon = Daemon(base, seed_root, ["-H", f"tcp://127.0.0.1:{port}", "--insecure-tcp",
                                      "--policy", str(base / "policy.toml")])  # fmt: skip
    daemon.start()
    yield daemon, port
    daemon.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def _head(method: str, path: str, framing: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n{framing}\r\n\r\n"
    return head.encode()


def _prompt_response(s: socket.socket) -> tuple[int, dict[str, str], bytes, Reader]:
    """The next response, which must arrive within PROMPT."""
    s.settimeout(PROMPT)
    reader = Reader(s)
    started = time.monotonic()
    status, headers, body = reader.response()
    assert time.monotonic() - started < PROMPT
    return status, headers, body, reader


def _closed_within(reader: Reader, seconds: float) -> None:
    """The server closes the connection (EOF) within ``seconds``, having sent nothing more."""
    reader.s.settimeout(seconds)
    assert reader.buf == b""
    assert reader.s.recv(65536) == b""


def _keep_sending(s: socket.socket, head: bytes, chunks: Iterator[bytes]) -> threading.Thread:
    """Send like the docker CLI does: the body goes on in the background while the response is read."""

    def run() -> None:
        try:
            s.sendall(head)
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass  # the server closed after answering

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _chunked(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"%x\r\n%b\r\n" % (size, b"\0" * size)
    yield b"0\r\n\r\n"


# -- a handler error before the body was read (404: no such container)


def test_unknown_container_big_body_answered_then_closed(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    with connect(daemon) as s:
        # headers and 1 MiB of a 50 MiB body; the client sends nothing more until it has the answer
        s.sendall(_head("PUT", "/v1.47/containers/nosuch/archive?path=/", f"Content-Length: {BIG}"))
        s.sendall(b"\0" * (1 << 20))
        status, headers, body, reader = _prompt_response(s)
        assert status == 404 and json.loads(body) == {"message": "No such container: nosuch"}
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)
    assert daemon.ping()


def test_unknown_container_small_rest_keeps_connection(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    size = 100 << 10  # below the 256 KiB that is read and dropped after the answer
    with connect(daemon) as s:
        s.sendall(_head("PUT", "/containers/nosuch/archive?path=/", f"Content-Length: {size}"))
        s.sendall(b"\0" * (10 << 10))
        status, headers, body, reader = _prompt_response(s)
        assert status == 404 and json.loads(body) == {"message": "No such container: nosuch"}
        assert "connection" not in headers
        # the rest of the body is not taken for a request; the next request on the connection is answered
        s.sendall(b"\0" * (size - (10 << 10)) + b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        status, _, body = reader.response()
        assert status == 200 and body == b"OK"


def test_unknown_container_body_never_sent_after_expect_continue(d: tuple[Daemon, int]) -> None:
    # Whether such a client sends its body after the answer is its choice: the connection cannot go on.
    daemon, _ = d
    with connect(daemon) as s:
        s.sendall(
            _head("PUT", "/containers/nosuch/archive?path=/", "Content-Length: 1000\r\nExpect: 100-continue")
        )
        status, headers, body, reader = _prompt_response(s)
        assert status == 404 and json.loads(body) == {"message": "No such container: nosuch"}
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)


def test_unknown_container_chunked_body_still_sending(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    with connect(daemon) as s:
        head = _head("PUT", "/containers/nosuch/archive?path=/", "Transfer-Encoding: chunked")
        sender = _keep_sending(s, head, _chunked(BIG))
        status, headers, body, reader = _prompt_response(s)
        assert status == 404 and json.loads(body) == {"message": "No such container: nosuch"}
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)
        sender.join(PROMPT)
        assert not sender.is_alive()  # the server did not leave the sender blocked
    assert daemon.ping()


def test_docker_cp_to_unknown_container_fails_at_once(d: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, _ = d
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(20 << 30)  # 20 GiB, sparse: sending all of it would take far longer than PROMPT
    started = time.monotonic()
    proc = daemon.cli("cp", str(big), "nosuch:/big", check=False, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert b"No such container: nosuch" in proc.stderr
    assert elapsed < PROMPT, f"docker cp took {elapsed:.1f}s to fail"


def test_sdk_put_archive_to_unknown_container(d: tuple[Daemon, int]) -> None:
    # The SDK (urllib3) sends the whole body before it reads: the answer must still be there to read.
    daemon, _ = d
    started = time.monotonic()
    with pytest.raises(docker.errors.NotFound, match="No such container: nosuch"):
        daemon.api.put_archive("nosuch", "/", b"\0" * (100 << 20))
    assert time.monotonic() - started < 3 * PROMPT
    assert daemon.api.version()["ApiVersion"] == "1.47"  # and the client goes on with a new connection


# -- refused by the middleware before the handler ran (403 policy denial)


@pytest.mark.root
def test_policy_denial_big_body_answered_then_closed(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    with connect(daemon) as s:
        s.sendall(_head("POST", "/v1.47/images/create?fromSrc=-", f"Content-Length: {BIG}"))
        s.sendall(b"\0" * (4 << 20))  # more than the body stream buffers before it stops reading
        status, headers, body, reader = _prompt_response(s)
        assert status == 403 and json.loads(body) == {"message": DENIED}
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)
    assert daemon.ping()


@pytest.mark.root
def test_policy_denial_small_rest_keeps_connection(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    with connect(daemon) as s:
        s.sendall(_head("POST", "/images/create?fromSrc=-", "Content-Length: 65536") + b"\0" * 1000)
        status, headers, body, reader = _prompt_response(s)
        assert status == 403 and json.loads(body) == {"message": DENIED}
        assert "connection" not in headers
        s.sendall(b"\0" * (65536 - 1000) + b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        assert reader.response()[2] == b"OK"


@pytest.mark.root
def test_policy_denial_with_pipelined_request(d: tuple[Daemon, int]) -> None:
    # Body and a next request in one write: whether the answer came before or after the body was parsed,
    # the body is never taken for a request, and the next request is answered or the connection closed.
    daemon, _ = d
    body = b"".join(_chunked(3 << 20, 64 << 10))
    head = _head("POST", "/images/create?fromSrc=-", "Transfer-Encoding: chunked")
    with connect(daemon) as s:
        s.sendall(head + body + b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        status, headers, answer, reader = _prompt_response(s)
        assert status == 403 and json.loads(answer) == {"message": DENIED}
        if headers.get("connection") == "close":
            _closed_within(reader, PROMPT)
        else:
            assert reader.response()[2] == b"OK"


@pytest.mark.root
def test_docker_import_denied_fails_at_once(d: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, _ = d
    big = tmp_path / "big.tar"
    with big.open("wb") as f:
        f.truncate(20 << 30)
    started = time.monotonic()
    proc = daemon.cli("import", str(big), "denied:latest", check=False, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert DENIED.encode() in proc.stderr
    assert elapsed < PROMPT, f"docker import took {elapsed:.1f}s to fail"


@pytest.mark.root
def test_sdk_import_denied(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    with pytest.raises(docker.errors.APIError, match="operation ImageCreate is not allowed") as err:
        daemon.api.import_image_from_data(b"\0" * (100 << 20), repository="denied")
    assert err.value.status_code == 403
    assert daemon.api.version()["ApiVersion"] == "1.47"


# -- buffered bodies over the limit (413)


def test_oversized_buffered_body_refused_from_its_length(d: tuple[Daemon, int]) -> None:
    daemon, _ = d
    with connect(daemon) as s:
        s.sendall(_head("POST", "/containers/create", f"Content-Length: {80 << 20}"))  # and no body yet
        status, headers, body, reader = _prompt_response(s)
        assert status == 413 and "too large" in json.loads(body)["message"]
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)


def test_oversized_chunked_buffered_body_over_tcp(d: tuple[Daemon, int]) -> None:
    daemon, port = d
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT) as s:
        sender = _keep_sending(s, _head("POST", "/containers/create", "Transfer-Encoding: chunked"),
                               _chunked(80 << 20))  # fmt: skip
        sender.join(30)  # the whole body first, then the answer: an RST must not have destroyed it
        status, headers, body, reader = _prompt_response(s)
        assert status == 413 and "too large" in json.loads(body)["message"]
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)
    assert daemon.ping()


def test_refused_big_body_over_tcp_is_not_reset(d: tuple[Daemon, int]) -> None:
    _, port = d
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT) as s:
        s.sendall(_head("PUT", "/containers/nosuch/archive?path=/", f"Content-Length: {BIG}"))
        s.sendall(os.urandom(1 << 20))
        time.sleep(0.5)  # the server has answered and decided what to do with the connection by now
        status, headers, body, reader = _prompt_response(s)
        assert status == 404 and json.loads(body) == {"message": "No such container: nosuch"}
        assert headers["connection"] == "close"
        _closed_within(reader, PROMPT)
