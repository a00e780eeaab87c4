"""Listening sockets: unix (mode 0660, group-owned), tcp (mutual TLS), fd:// (systemd socket activation).

Each accepted connection gets its caller identity from the connection itself (see ``security.identity``): the
kernel's peer credentials on the unix socket, the verified client certificate over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.api import http
from dockyard.api.http import HttpConnection
from dockyard.api.messages import Dispatcher
from dockyard.api.tls import TlsProtocol, server_context
from dockyard.config import ConfigError, DaemonConfig
from dockyard.security.identity import Identity, tls_peer_identity, unix_peer_identity

log = logging.getLogger("dockyard.listeners")

SD_LISTEN_FDS_START = 3
# Tuning (and tests) may shorten the request-head timeout without a public flag.
HEAD_TIMEOUT_ENV = "DOCKYARD_HEAD_TIMEOUT"


@dataclass(frozen=True)
class Listener:
    """A bound, listening socket and how to serve it (``tls`` None: plaintext)."""

    sock: socket.socket
    tls: ssl.SSLContext | None = None


def open_listeners(cfg: DaemonConfig) -> list[Listener]:
    """Bind every ``-H`` host of the configuration (unix://, tcp://, fd://).

    Raises:
        ConfigError: a host cannot be served as configured (with the reason).
    """
    tls = _tls_context(cfg) if (cfg.tls or cfg.tlsverify) else None
    out: list[Listener] = []
    for host in cfg.hosts:
        scheme, _, rest = host.partition("://")
        try:
            if scheme == "unix":
                out.append(Listener(bind_unix(Path(rest), cfg.group)))
            elif scheme == "tcp":
                out.append(_tcp_listener(bind_tcp(rest), host, cfg, tls))
            elif scheme == "fd":
                passed = systemd_sockets(rest)
                if not passed:
                    raise ConfigError("fd:// given but no sockets were passed by systemd (LISTEN_FDS)")
                out.extend(_fd_listener(sock, host, cfg, tls) for sock in passed)
            else:
                raise ConfigError(f"invalid host {host!r}")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot listen on {host}: {exc}") from None
    return out


def _tcp_listener(sock: socket.socket, host: str, cfg: DaemonConfig, tls: ssl.SSLContext | None) -> Listener:
    if not cfg.tlsverify:
        if not cfg.insecure_tcp:
            sock.close()
            raise ConfigError(f"refusing to listen on {host} without --tlsverify (or --insecure-tcp)")
        warn_insecure(host, tls is not None)
    return Listener(sock, tls)


def _fd_listener(sock: socket.socket, host: str, cfg: DaemonConfig, tls: ssl.SSLContext | None) -> Listener:
    if sock.family == socket.AF_UNIX:
        return Listener(sock)
    return _tcp_listener(sock, host, cfg, tls)


def _tls_context(cfg: DaemonConfig) -> ssl.SSLContext:
    if cfg.tlscert is None or cfg.tlskey is None or (cfg.tlsverify and cfg.tlscacert is None):
        raise ConfigError("TLS needs --tlscert and --tlskey, and --tlscacert with --tlsverify")
    try:
        return server_context(cfg.tlscert, cfg.tlskey, cfg.tlscacert, cfg.tlsverify)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"could not load TLS certificate, key or CA ({cfg.tlscert}, {cfg.tlskey}, {cfg.tlscacert}): {exc}"
        ) from None


def bind_unix(path: Path, group: str) -> socket.socket:
    """Create the unix socket: stale file removed, mode 0660, owner root, group ``group`` if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
        else:
            raise OSError(f"{path} exists and is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is reachable by others
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    gid = _group_id(group)
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid if gid is not None else -1)
    os.chmod(path, 0o660)
    sock.listen(1024)
    return sock


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name != "docker":
            log.warning("group %s not found; socket stays owned by root's group", name)
        return None


def bind_tcp(address: str) -> socket.socket:
    """Bind ``HOST:PORT`` (``[v6]:PORT`` too); port 0 picks a free one."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"tcp://{address}: expected tcp://ADDR:PORT")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    return sock


def warn_insecure(where: str, tls: bool) -> None:
    """The loud warning logged at every start that serves TCP without client certificates."""
    what = "TLS without client verification" if tls else "plain TCP without TLS"
    log.warning(
        "!!! INSECURE: serving the API on %s with %s (--insecure-tcp). Anyone who can reach it can run "
        "privileged containers and so owns this host. Use --tlsverify. !!!",
        where,
        what,
    )


def systemd_sockets(which: str = "") -> list[socket.socket]:
    """Sockets passed by systemd (``LISTEN_PID``/``LISTEN_FDS``), for ``-H fd://`` or ``-H fd://N``.

    The descriptors are made close-on-exec: systemd passes them inheritable, and every shim and runtime we
    start would otherwise hold the API socket open.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    for fd in fds:
        os.set_inheritable(fd, False)
    if which:
        if not which.isdigit() or int(which) not in fds:
            raise ValueError(f"fd://{which}: not among the sockets passed by systemd ({fds})")
        fds = [int(which)]
    return [socket.socket(fileno=fd) for fd in fds]


async def serve_socket(
    app: Dispatcher, sock: socket.socket, tls: ssl.SSLContext | None = None
) -> asyncio.Server:
    """Serve HTTP on an already-bound listening socket, through TLS when ``tls`` is given."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    head_timeout = float(os.environ.get(HEAD_TIMEOUT_ENV, http.HEAD_TIMEOUT))
    identify = _logged(_identify_for(sock, tls))

    def http_factory() -> HttpConnection:
        return HttpConnection(app, identify, head_timeout=head_timeout)

    factory: Callable[[], asyncio.Protocol] = http_factory
    if tls is not None:
        context = tls
        factory = lambda: TlsProtocol(context, http_factory, handshake_timeout=head_timeout)  # noqa: E731
    if sock.family == socket.AF_UNIX:
        return await loop.create_unix_server(factory, sock=sock, backlog=1024)
    return await loop.create_server(factory, sock=sock, backlog=1024)


def _identify_for(
    sock: socket.socket, tls: ssl.SSLContext | None
) -> Callable[[asyncio.BaseTransport], Identity]:
    if tls is not None:
        return tls_peer_identity
    if sock.family == socket.AF_UNIX:
        return unix_peer_identity
    return lambda _t: Identity(transport="tcp")


def _logged(
    identify: Callable[[asyncio.BaseTransport], Identity],
) -> Callable[[asyncio.BaseTransport], Identity]:
    """One debug line per connection with who it is (the audit layer reads ``Request.identity``)."""

    def wrapper(transport: asyncio.BaseTransport) -> Identity:
        who = identify(transport)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "connection transport=%s uid=%s gid=%s pid=%s user=%s cn=%s fingerprint=%s peer=%s",
                who.transport, who.uid, who.gid, who.pid, who.user, who.cert_cn, who.cert_fingerprint,
                transport.get_extra_info("peername"),
            )  # fmt: skip
        return who

    return wrapper
