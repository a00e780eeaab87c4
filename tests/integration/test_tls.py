"""TCP with mutual TLS: the real docker CLI and the docker SDK with client certificates, half-close after the
client's close_notify, refused certificates, slow clients, insecure TCP and TLS flag validation.

Certificates are made per module with the ``openssl`` CLI (CA, server with IP SAN, client with clientAuth).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockyard import config as configmod
from tests.conftest import DOCKER_CLI, Daemon, _base_dir, kill_leftovers

HEAD_TIMEOUT = 2.0

pytestmark = pytest.mark.root


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem",
             "-out", f"{name}.pem", "-days", "3", "-subj", f"/CN={name}", cwd=d)  # fmt: skip


def _make_cert(d: Path, ca: str, name: str, cn: str, ext: str, days: str = "3") -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", days, "-extfile", f"{name}.ext",
             cwd=d)  # fmt: skip


CLIENT_EXT = "subjectAltName=DNS:alice.example,IP:127.0.0.1\nextendedKeyUsage=clientAuth\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca, server, client (CN alice), other-CA client, expired client."""
    d = tmp_path_factory.mktemp("certs")
    _make_ca(d, "ca")
    _make_ca(d, "otherca")
    _make_cert(
        d,
        "ca",
        "server",
        "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _make_cert(d, "ca", "client", "alice", CLIENT_EXT)
    _make_cert(d, "otherca", "stranger", "mallory", CLIENT_EXT)
    _make_cert(d, "ca", "expired", "alice", CLIENT_EXT, days="-1")
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(d: Daemon) -> None:
    os.environ["DOCKYARD_HEAD_TIMEOUT"] = str(HEAD_TIMEOUT)
    try:
        d.start()
    finally:
        os.environ.pop("DOCKYARD_HEAD_TIMEOUT", None)


@pytest.fixture(scope="module")
def tls_daemon(seed_root: Path, certs: Path) -> Iterator[tuple[Daemon, int]]:
    """A daemon on a unix socket and on tcp://127.0.0.1:PORT with --tlsverify, short head timeout."""
    port = _free_port()
    c = certs
    d = Daemon(_base_dir(), seed_root, [
        "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(c / "ca.pem"),
        "--tlscert", str(c / "server.pem"), "--tlskey", str(c / "server-key.pem"),
    ])  # fmt: skip
    _start(d)
    yield d, port
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CA bundle in the environment would override the SDK's (DESIGN.md §5).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _tls_cli(
    certs: Path, port: int, *args: str, cert: str = "client", input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CLI_HINTS"] = "false"
    cmd = [DOCKER_CLI, "--tlsverify", "--tlscacert", str(certs / "ca.pem"),
           "--tlscert", str(certs / f"{cert}.pem"), "--tlskey", str(certs / f"{cert}-key.pem"),
           "-H", f"tcp://127.0.0.1:{port}", *args]  # fmt: skip
    return subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=60,
                          stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip


def test_docker_cli_over_mutual_tls(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    _, port = tls_daemon
    version = _tls_cli(certs, port, "version", "--format", "{{.Server.APIVersion}}")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == b"1.47"
    ps = _tls_cli(certs, port, "ps")
    assert ps.returncode == 0, ps.stderr
    assert ps.stdout.startswith(b"CONTAINER ID")


def test_run_interactive_output_after_close_notify(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    """stdin ends (the CLI sends close_notify), the container still prints; asyncio's TLS loses 'late'."""
    _, port = tls_daemon
    proc = _tls_cli(
        certs, port, "run", "-i", "--rm", "busybox", "sh", "-c", "cat; sleep 1; echo late", input=b"hi\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hi\nlate\n"


def test_docker_sdk_over_mutual_tls(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    _, port = tls_daemon
    tls = docker.tls.TLSConfig(
        client_cert=(str(certs / "client.pem"), str(certs / "client-key.pem")),
        ca_cert=str(certs / "ca.pem"),
        verify=True,
    )
    client = docker.DockerClient(base_url=f"https://127.0.0.1:{port}", tls=tls, timeout=60)
    try:
        assert client.version()["ApiVersion"] == "1.47"
        assert client.containers.run("busybox", ["echo", "over tls"], remove=True) == b"over tls\n"
    finally:
        client.close()


def test_identity_from_client_certificate(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    d, port = tls_daemon
    assert _tls_cli(certs, port, "version").returncode == 0
    der = ssl.PEM_cert_to_DER_cert((certs / "client.pem").read_text())
    log = d.log_path.read_text()
    fingerprint = hashlib.sha256(der).hexdigest()
    assert f"transport=tls uid=None gid=None pid=None user=None cn=alice fingerprint={fingerprint}" in log


def _tls_exchange(port: int, certs: Path, cert: str | None) -> bytes:
    """Handshake with the given client certificate, send a request, return what came back (b'' if refused)."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(certs / f"{cert}.pem"), str(certs / f"{cert}-key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
                tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                return tls.recv(4096)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b""


def test_valid_certificate_is_served(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    _, port = tls_daemon
    assert _tls_exchange(port, certs, "client").startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("cert", [None, "stranger", "expired"])
def test_bad_client_certificates_are_refused(
    tls_daemon: tuple[Daemon, int], certs: Path, cert: str | None
) -> None:
    d, port = tls_daemon
    assert _tls_exchange(port, certs, cert) == b""
    assert "TLS handshake with ('127.0.0.1'" in d.log_path.read_text()


def test_docker_cli_with_foreign_certificate_fails(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    _, port = tls_daemon
    proc = _tls_cli(certs, port, "ps", cert="stranger")
    assert proc.returncode != 0
    assert b"CONTAINER ID" not in proc.stdout


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed the connection; fails if it stays open longer than ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    while True:
        try:
            if not sock.recv(4096):
                return time.monotonic() - started
        except ConnectionResetError:
            return time.monotonic() - started
        except TimeoutError:
            pytest.fail(f"connection still open after {seconds}s")


def test_silent_tcp_client_is_dropped_before_handshake(tls_daemon: tuple[Daemon, int]) -> None:
    _, port = tls_daemon
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert _closed_within(s, HEAD_TIMEOUT + 5) >= HEAD_TIMEOUT - 0.5


@pytest.mark.parametrize("sent", [b"", b"GET /_ping HTTP/1.1\r\nHost: d\r\n"])
def test_slow_unix_client_is_dropped(tls_daemon: tuple[Daemon, int], sent: bytes) -> None:
    d, _ = tls_daemon
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.socket))
        s.sendall(sent)
        assert _closed_within(s, HEAD_TIMEOUT + 5) >= HEAD_TIMEOUT - 0.5
    assert d.ping()  # the daemon still serves others


def test_slow_tls_client_is_dropped_after_handshake(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    _, port = tls_daemon
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client-key.pem"))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(b"GET /_ping HTTP/1.1\r\n")
        started = time.monotonic()
        s.settimeout(HEAD_TIMEOUT + 5)
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            while s.recv(4096):
                pass
        assert HEAD_TIMEOUT - 0.5 <= time.monotonic() - started < HEAD_TIMEOUT + 5


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A base directory for a daemon that should fail to start (it may still set up its mount namespace)."""
    base = _base_dir()
    yield base
    kill_leftovers(base)
    shutil.rmtree(base, ignore_errors=True)


def _daemon_cmd(base: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dockyard.daemon", "--data-root", str(base / "root"), "--exec-root",
            str(base / "exec"), *args]  # fmt: skip


def test_plain_tcp_refused_without_insecure_flag(scratch: Path) -> None:
    proc = subprocess.run(_daemon_cmd(scratch, "-H", "tcp://127.0.0.1:0"), capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert b"refusing to listen on tcp://127.0.0.1:0 without --tlsverify" in proc.stderr


def test_insecure_tcp_serves_with_loud_warning(seed_root: Path) -> None:
    port = _free_port()
    d = Daemon(_base_dir(), seed_root, ["-H", f"tcp://127.0.0.1:{port}", "--insecure-tcp"])
    try:
        d.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
        assert re.search(
            r"WARNING .*INSECURE: serving the API on tcp://127\.0\.0\.1:\d+ with plain TCP",
            d.log_path.read_text(),
        )
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)


def test_missing_tls_file_is_a_clear_error(
    certs: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["-H", "tcp://127.0.0.1:0", "--tlsverify", "--tlscacert", str(certs / "ca.pem"),
            "--tlscert", str(scratch / "nope.pem"), "--tlskey", str(certs / "server-key.pem")]  # fmt: skip
    with pytest.raises(
        configmod.ConfigError, match=r"could not read --tlscert file '.*nope\.pem': No such file"
    ):
        configmod.load(args)
    monkeypatch.setenv("DOCKER_CERT_PATH", str(scratch / "no-certs-here"))
    with pytest.raises(
        configmod.ConfigError,
        match=r"could not read --tlscacert file '.*/no-certs-here/ca\.pem' "
        r"\(the default: pass --tlscacert or set DOCKER_CERT_PATH\): No such file",
    ):
        configmod.load(
            ["--tlsverify", "--tlscert", str(certs / "server.pem"), "--tlskey", str(certs / "server-key.pem")]
        )
    proc = subprocess.run(_daemon_cmd(scratch, *args), capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert b"could not read --tlscert file" in proc.stderr


def test_tls_files_default_to_docker_cert_path(
    seed_root: Path, certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As dockerd: ``--tlsverify`` alone takes ca.pem, cert.pem and key.pem from $DOCKER_CERT_PATH."""
    cert_dir = tmp_path / "docker-certs"
    cert_dir.mkdir()
    for src, dst in (("ca.pem", "ca.pem"), ("server.pem", "cert.pem"), ("server-key.pem", "key.pem")):
        shutil.copy(certs / src, cert_dir / dst)
    monkeypatch.setenv("DOCKER_CERT_PATH", str(cert_dir))
    port = _free_port()
    d = Daemon(_base_dir(), seed_root, ["-H", f"tcp://127.0.0.1:{port}", "--tlsverify"])
    try:
        _start(d)
        monkeypatch.delenv("DOCKER_CERT_PATH")
        ok = _tls_cli(certs, port, "version", "--format", "{{.Server.Version}}")
        assert ok.returncode == 0, ok.stderr
        stranger = _tls_cli(certs, port, "version", cert="stranger")  # the default CA decides
        assert stranger.returncode != 0
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)


def test_key_not_matching_certificate_fails_start(certs: Path, scratch: Path) -> None:
    args = ["-H", "tcp://127.0.0.1:0", "--tlsverify", "--tlscacert", str(certs / "ca.pem"),
            "--tlscert", str(certs / "server.pem"), "--tlskey", str(certs / "client-key.pem")]  # fmt: skip
    proc = subprocess.run(_daemon_cmd(scratch, *args), capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert b"could not load TLS certificate" in proc.stderr


def test_large_streams_both_ways_over_tls(tls_daemon: tuple[Daemon, int], certs: Path) -> None:
    """Megabytes in through stdin and out through stdout: back-pressure through TLS loses nothing."""
    _, port = tls_daemon
    data = os.urandom(3 << 20)
    proc = _tls_cli(certs, port, "run", "-i", "--rm", "busybox", "sh", "-c", "cat; cat /dev/null", input=data)
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
