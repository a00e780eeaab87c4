"""What handlers see of HTTP: the request, the response, and the two ways to answer at length (a chunked
stream, or the raw connection after a hijack). The protocol that produces them is :mod:`dockyard.api.http`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from dockyard.security.identity import Identity
from dockyard.security.policy import Decision

if TYPE_CHECKING:
    from dockyard.api.app import Plan
    from dockyard.api.http import HttpConnection


class ClientGone(Exception):
    """The client closed the connection while a response was being streamed."""


class Response:
    """A complete response, written with a Content-Length."""

    __slots__ = ("body", "content_type", "encoded_head", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []
        self.encoded_head: bytes | None = None


class Request:
    """One parsed request. ``body`` is complete unless the route asked for a streamed body."""

    __slots__ = (
        "_query",
        "body",
        "body_stream",
        "conn",
        "decision",
        "headers",
        "keep_alive",
        "method",
        "params",
        "path",
        "plan",
        "query_string",
        "raw_path",
        "request_id",
        "route",
        "version",
    )

    def __init__(self, conn: HttpConnection, method: str, raw_path: str, headers: dict[str, str]) -> None:
        self.conn = conn
        self.method = method
        self.raw_path = raw_path
        path, _, qs = raw_path.partition("?")
        self.path = path
        self.query_string = qs
        self.headers = headers
        self.body = b""
        self.body_stream: asyncio.StreamReader | None = None
        self.keep_alive = True
        self.params: dict[str, str] = {}
        self.version = ""
        self.request_id = ""
        self.route: Any = None
        self.decision: Decision | None = None  # the policy's, kept for the audit record
        self.plan: Plan | None = None  # the security stage's, for a plain read (api.middleware.stage)
        self._query: dict[str, list[str]] | None = None

    @property
    def identity(self) -> Identity:
        """Who is calling, established by the listener from the connection itself."""
        return self.conn.identity

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters (parsed once, on first use)."""
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter, or ``default``."""
        values = self.query.get(name)
        return values[-1] if values else default

    @property
    def disconnected(self) -> asyncio.Future[None]:
        """Resolves when the client's connection is gone or it stopped sending (as Go's server cancels a
        request's context on the read side's EOF: a waiting handler must not outlive its client)."""
        return self.conn.input_ended

    async def start_stream(
        self,
        status: int = 200,
        content_type: str = "application/json",
        extra: list[tuple[str, str]] | None = None,
    ) -> StreamWriter:
        """Send the headers now (flushed at once) and return a writer for a chunked body."""
        return await self.conn.start_stream(status, content_type, extra or [])

    def hijack(self, content_type: str) -> RawStream:
        """Take over the connection for raw bidirectional bytes (``Upgrade: tcp``)."""
        upgrade = "upgrade" in self.headers.get("connection", "").lower()
        return self.conn.hijack(content_type, upgrade)


class Dispatcher(Protocol):
    """What the connection needs from the application."""

    def route(self, req: Request) -> bool:
        """Resolve the route at headers time; True when the route wants a streamed body."""
        ...

    def handle(self, req: Request) -> Response | Awaitable[Response | None]:
        """Handle a request: a Response now, or an awaitable that completes it."""
        ...

    @property
    def common_headers(self) -> bytes:
        """Headers every response carries (pre-encoded, ending in CRLF)."""
        ...

    def max_body(self) -> int:
        """Largest complete request body accepted, in bytes."""
        ...


class StreamWriter:
    """Chunked response body with back-pressure."""

    __slots__ = ("_conn", "_done")

    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn
        self._done = False

    async def write(self, data: bytes) -> None:
        """Send one chunk (flushed); raises ClientGone when the client left."""
        if not data:
            return
        conn = self._conn
        if conn.closed.done():
            raise ClientGone()
        conn.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        await conn.drain()

    @property
    def gone(self) -> asyncio.Future[None]:
        """Resolves when the client left (closed, or stopped sending)."""
        return self._conn.input_ended

    async def end(self) -> None:
        """Terminate the body; the connection goes on with the next request."""
        if self._done:
            return
        self._done = True
        if not self._conn.closed.done():
            self._conn.transport.write(b"0\r\n\r\n")


class RawStream:
    """The raw byte stream of a hijacked connection."""

    __slots__ = ("_conn", "reader")

    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn
        self.reader = asyncio.StreamReader(limit=2**20)

    def write(self, data: bytes) -> None:
        """Queue bytes for the client (no-op once it is gone)."""
        if not self._conn.closed.done():
            self._conn.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is low; raises ClientGone when it closed."""
        await self._conn.drain()

    @property
    def closed(self) -> asyncio.Future[None]:
        """Resolves when the connection is gone."""
        return self._conn.closed

    def close(self) -> None:
        """Close the connection (after flushing what was written)."""
        self._conn.transport.close()
