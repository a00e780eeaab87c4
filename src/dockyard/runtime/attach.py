"""The container's stdio through conmon's attach socket.

conmon listens on ``<bundle>/attach`` (AF_UNIX, SOCK_SEQPACKET). Each message it sends starts with
one byte naming the stream (2 = stdout, 3 = stderr) followed by the data; every message we send is
written to the container's stdin. When we shut down our write side (or close the connection),
conmon closes the container's stdin unless it runs with ``--leave-stdin-open`` (a container whose
``stdin_once`` is false), which is how ``close_stdin`` works. When the
container has exited and its output is drained, conmon closes the socket.

The socket is reached as ``/proc/self/fd/<dirfd>/attach`` with an O_PATH descriptor of the bundle,
so the 108-byte limit of unix socket paths never applies, whatever the bundle's path length.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from dockyard.errors import SystemFailure

# conmon reads at most 32 KiB per message from us; larger sends would be truncated.
_MAX_STDIN_MESSAGE = 8192
_STREAMS = {2: 1, 3: 2}


class ConmonAttach:
    """An :class:`~dockyard.runtime.base.AttachStream` over conmon's attach socket."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap a connected, non-blocking SOCK_SEQPACKET socket."""
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, socket_path: Path) -> ConmonAttach:
        """Connect to the attach socket at ``socket_path``.

        Raises:
            SystemFailure: the socket is missing or refuses the connection.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        dir_fd = os.open(socket_path.parent, os.O_PATH | os.O_CLOEXEC)
        try:
            await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{dir_fd}/{socket_path.name}")
        except OSError as exc:
            sock.close()
            raise SystemFailure(f"cannot attach to container: {exc}") from exc
        finally:
            os.close(dir_fd)
        return cls(sock)

    async def read(self) -> tuple[int, bytes] | None:
        """Next output chunk as (stream, data); None once conmon closed the connection."""
        while True:
            try:
                message = await self._loop.sock_recv(self._sock, 65536)
            except (ConnectionResetError, OSError):
                return None
            if not message:
                return None
            stream = _STREAMS.get(message[0])
            if stream is not None and len(message) > 1:
                return stream, message[1:]

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the container's stdin (split into messages conmon reads whole)."""
        for start in range(0, len(data), _MAX_STDIN_MESSAGE):
            try:
                await self._loop.sock_sendall(self._sock, data[start : start + _MAX_STDIN_MESSAGE])
            except OSError as exc:
                raise SystemFailure(f"cannot write to container stdin: {exc}") from exc

    async def close_stdin(self) -> None:
        """Close the container's stdin; output keeps flowing."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Drop the connection."""
        self._sock.close()
