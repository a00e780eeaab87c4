"""TLS for ``tcp://`` listeners: the server context and a TLS layer that allows half-close.

Why not ``loop.create_server(ssl=...)``: asyncio's TLS layer (``sslproto``, Python 3.11) starts its own
shutdown as soon as the peer's ``close_notify`` arrives, whatever the protocol's ``eof_received`` answers
("returning true from eof_received() has no effect when using ssl"). The docker CLI sends ``close_notify``
when stdin ends during ``docker run -i`` / ``attach``, so the container's late output would be lost
(DESIGN.md §5). This module drives the stdlib's ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` buffers itself:
on the peer's ``close_notify`` the application gets ``eof_received`` and, when it returns True, our side of
the connection stays open for writing until the application closes it. Everything cryptographic is the
stdlib's ``ssl`` (OpenSSL); this is only plumbing between the socket, OpenSSL's buffers and the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

log = logging.getLogger("dockyard.tls")

HANDSHAKE_TIMEOUT = 30.0
_READ_SIZE = 256 * 1024


def server_context(cert: Path, key: Path, cacert: Path | None, verify: bool) -> ssl.SSLContext:
    """The server's TLS context: TLS ≥ 1.2; with ``verify``, a client certificate signed by ``cacert``.

    Args:
        cert: the server certificate (PEM), chain allowed.
        key: its private key (PEM).
        cacert: CA bundle that client certificates must chain to (required with ``verify``).
        verify: require and verify a client certificate (``--tlsverify``).

    Returns:
        A context for server-side connections.

    Raises:
        ssl.SSLError: a file does not hold what it should (the caller turns it into a config error).
        OSError: a file cannot be read.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(str(cert), str(key))
    if verify:
        if cacert is None:
            raise ValueError("--tlsverify needs --tlscacert")
        ctx.load_verify_locations(cafile=str(cacert))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsProtocol(asyncio.Protocol):
    """Server side of one TLS connection; hands the decrypted stream to an application protocol.

    The application protocol is created once the handshake succeeded: it never sees an unauthenticated peer.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        app_factory: Callable[[], asyncio.Protocol],
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.context = context
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self._app: asyncio.Protocol | None = None
        self._app_transport: TlsTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer_done = False  # close_notify or FIN seen, application told
        self.closing = False

    # -- the TCP side ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._on_handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._incoming.write(data)
        if self._app is None and not self._handshake():
            return
        self._read()

    def eof_received(self) -> bool:
        self._incoming.write_eof()
        if self._app is None:
            return False
        self._peer_finished()
        return True  # our write side stays open; the application closes when it is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        if self._app is not None:
            self._app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # -- TLS -------------------------------------------------------------------------------------------
    def _handshake(self) -> bool:
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
            log.info("TLS handshake with %s refused: %s", self._peer(), why)
            self._flush()  # the alert tells the client why
            self._shut(abort=False)
            return False
        self._cancel_timer()
        self._flush()
        self._app_transport = TlsTransport(self)
        self._app = self._app_factory()
        self._app.connection_made(self._app_transport)
        return True

    def _read(self) -> None:
        chunks: list[bytes] = []
        finished = False
        try:
            while True:
                chunk = self.ssl_object.read(_READ_SIZE)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            finished = True
        except ssl.SSLError as exc:
            log.info("TLS error from %s: %s", self._peer(), exc)
            self._shut(abort=True)
            return
        self._flush()
        if chunks and self._app is not None and not self.closing:
            self._app.data_received(b"".join(chunks))
        if finished:
            self._peer_finished()

    def _peer_finished(self) -> None:
        """The client sends no more (close_notify or FIN): tell the application, close only if it agrees."""
        if self._peer_done or self._app is None:
            return
        self._peer_done = True
        if not self._app.eof_received():
            self.close()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- used by TlsTransport --------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send application bytes (dropped once closing)."""
        if self.closing or not data:
            return
        try:
            self.ssl_object.write(data)
        except ssl.SSLError as exc:
            log.info("TLS write to %s failed: %s", self._peer(), exc)
            self._shut(abort=True)
            return
        self._flush()

    def close(self) -> None:
        """Send our close_notify after what is queued, then close the socket."""
        if self.closing:
            return
        # Our close_notify is out even when unwrap wants the peer's; waiting for that only delays the close.
        with contextlib.suppress(ssl.SSLError):
            self.ssl_object.unwrap()
        self._flush()
        self._shut(abort=False)

    def abort(self) -> None:
        """Drop the connection now."""
        self._shut(abort=True)

    def _shut(self, abort: bool) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is None:
            return
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _on_handshake_timeout(self) -> None:
        self._timer = None
        log.info("TLS handshake with %s timed out", self._peer())
        self._shut(abort=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport is not None else None


class TlsTransport(asyncio.Transport):
    """What the application protocol sees: a transport carrying plaintext over the TLS connection."""

    def __init__(self, tls: TlsProtocol) -> None:
        super().__init__()
        self._tls = tls

    def _raw(self) -> asyncio.Transport:
        assert self._tls.transport is not None
        return self._tls.transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``ssl_object``, ``peercert``, ``cipher``, ``sslcontext``; anything else from the TCP transport."""
        sslobj = self._tls.ssl_object
        extra: dict[str, Callable[[], Any]] = {
            "ssl_object": lambda: sslobj,
            "peercert": sslobj.getpeercert,
            "cipher": sslobj.cipher,
            "compression": sslobj.compression,
            "sslcontext": lambda: self._tls.context,
        }
        getter = extra.get(name)
        return getter() if getter is not None else self._raw().get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send plaintext (encrypted on the way)."""
        self._tls.write(data)

    def can_write_eof(self) -> bool:
        """Half-closing our side is not offered (the HTTP layer never needs it)."""
        return False

    def close(self) -> None:
        """Flush, send close_notify, close the socket."""
        self._tls.close()

    def abort(self) -> None:
        """Close at once, losing what is buffered."""
        self._tls.abort()

    def is_closing(self) -> bool:
        """True once close or abort was called or the connection is lost."""
        return self._tls.closing

    def pause_reading(self) -> None:
        """Stop reading from the socket (flow control towards the client)."""
        if not self._tls.closing:
            self._raw().pause_reading()

    def resume_reading(self) -> None:
        """Resume reading from the socket."""
        if not self._tls.closing:
            self._raw().resume_reading()

    def is_reading(self) -> bool:
        """Whether the socket is being read."""
        return self._raw().is_reading()

    def get_write_buffer_size(self) -> int:
        """Bytes waiting in the TCP transport (ciphertext)."""
        return self._raw().get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Flow-control marks of the TCP transport."""
        self._raw().set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """Flow-control marks of the TCP transport."""
        return self._raw().get_write_buffer_limits()
