"""Listening sockets: unix (mode 0660, group-owned), fd:// (systemd socket activation).

Each accepted connection gets its caller identity from the socket itself (see ``security.identity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from dockyard.api.http import Dispatcher, HttpConnection
from dockyard.security.identity import Identity, unix_peer_identity

log = logging.getLogger("dockyard.listeners")

SD_LISTEN_FDS_START = 3


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


def systemd_sockets() -> list[socket.socket]:
    """Sockets passed by systemd (``LISTEN_PID``/``LISTEN_FDS``), for ``-H fd://``."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    socks = [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(count)]
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socks


async def serve_socket(app: Dispatcher, sock: socket.socket) -> asyncio.Server:
    """Serve HTTP on an already-bound listening socket."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    identify = _identify_for(sock)
    return await loop.create_unix_server(lambda: HttpConnection(app, identify), sock=sock, backlog=1024) if (
        sock.family == socket.AF_UNIX
    ) else await loop.create_server(lambda: HttpConnection(app, identify), sock=sock, backlog=1024)


def _identify_for(sock: socket.socket) -> Callable[[asyncio.BaseTransport], Identity]:
    if sock.family == socket.AF_UNIX:
        return unix_peer_identity
    return lambda _t: Identity(transport="tcp")
