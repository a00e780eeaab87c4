"""A lean HTTP/1.1 server protocol on ``httptools`` (Node's llhttp parser).

Why not aiohttp or an ASGI server: measured on this machine (DESIGN.md §5) aiohttp tops out at less than
half of dockerd's ``/_ping`` throughput, and ASGI servers cannot hand over the raw connection that ``attach``
and ``exec`` need (``Upgrade: tcp``). A small protocol on llhttp is both fast and in full control of the
socket: it answers synchronous handlers inline (no task per request), streams chunked bodies with
back-pressure, and after a hijack keeps the write side open when the client half-closes (``eof_received``
returns True).

This module knows HTTP framing only; routing, versions and errors live in :mod:`dockyard.api.app`.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools

from dockyard.api.errors import error_response
from dockyard.api.messages import ClientGone, Dispatcher, RawStream, Request, Response, StreamWriter
from dockyard.errors import DockyardError, HeadersTooLarge, InvalidParameter, SystemFailure, TooLarge
from dockyard.security.identity import Identity

if TYPE_CHECKING:
    from dockyard.api.app import Plan

log = logging.getLogger("dockyard.api")

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
# A client must finish a request head within HEAD_TIMEOUT of its first byte (or of connecting), and may idle
# between keep-alive requests for IDLE_TIMEOUT: a peer that connects and sends nothing holds nothing for long.
HEAD_TIMEOUT = 30.0
IDLE_TIMEOUT = 120.0
# A request answered before its streamed body was in (refused, or its handler failed first) leaves the rest
# of the body on the way. As Go's net/http server (dockerd): a rest of at most DISCARD_LIMIT bytes is read
# and dropped and the connection goes on; a larger or unknown rest ends the connection after the answer
# ("Connection: close"). Closing with unread input makes the kernel reset the connection, which can destroy
# the answer before the client read it, so the close lingers (Go: closeWriteAndWait): our side sends its
# FIN, and what the client still sends is read and dropped until it closes too, or for LINGER seconds.
DISCARD_LIMIT = 256 * 1024
LINGER = 1.0
_CLOSE = b"Connection: close\r\n"

STATUS_TEXT = {
    101: "UPGRADED",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class _Closing(Exception):
    """Raised in a parser callback to stop parsing a connection that is closing."""


class HttpConnection(asyncio.Protocol):
    """One client connection: parse, dispatch in order, write responses."""

    def __init__(
        self,
        app: Dispatcher,
        identify: Callable[[asyncio.BaseTransport], Identity],
        head_timeout: float = HEAD_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.app = app
        self._head_timeout = head_timeout
        self._idle_timeout = idle_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self.identify = identify
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.identity: Identity = None  # type: ignore[assignment]
        # The security stage's plans for this connection's plain reads, by request target (api.app.Plan;
        # api.middleware.stage makes and drops them, api.app.App.handle answers from them), or None.
        self.plans: dict[str, Plan] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.input_ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._current: Request | None = None
        self._body_parts: list[bytes] = []
        self._body_len = 0
        self._streamed = False  # the request being received has a streamed body
        self._stream: asyncio.StreamReader | None = None  # where it goes (None: dropped, or not streamed)
        self._body_left: int | None = None  # of a streamed body, still to come (None: chunked, unknown)
        self._active: Request | None = None  # the request being answered
        self._hang_up = False  # the answer says "Connection: close": the connection ends after it
        self._closing = False  # answered for the last time; input is read and dropped until the close
        self._linger: asyncio.TimerHandle | None = None
        self._pending: collections.deque[Request] = collections.deque()
        self._busy = False
        self._rejected: DockyardError | None = None  # unparsable input behind requests still to answer
        self._raw: RawStream | None = None
        self._paused_writing = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._keep_alive = True
        self._head_only = False  # answering a HEAD: headers as for GET, no body
        self._upgraded = False
        self._upgrade_tail = b""
        self.streaming = False  # response headers are out: errors can no longer become a response

    # -- asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.identity = self.identify(transport)
        self._arm_timer(self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm_timer(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._gone()

    def _gone(self) -> None:
        """Nothing more can be sent to the client nor read from it: wake whatever waits on either."""
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.input_ended.done():
            self.input_ended.set_result(None)
        if self._raw is not None:
            self._raw.reader.feed_eof()
        if self._stream is not None:
            self._stream.feed_eof()
        self._wake_drainers(ClientGone())

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_drainers(None)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._rejected is not None:
            return  # read only so that the close is not a reset
        if self._raw is not None:
            self._raw.reader.feed_data(data)
            return
        if self._upgraded:  # stdin sent before the handler took the connection over
            self._upgrade_tail += data
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded = True
            self._upgrade_tail = data[upgrade.args[0] :]
        except httptools.HttpParserCallbackError as exc:
            # llhttp wraps what our callbacks raise; the limits travel as the wrapped exception
            inner = exc.__context__
            if isinstance(inner, _Closing):
                pass
            elif isinstance(inner, TooLarge):
                self._reject_in_turn(inner)
            else:
                log.error("HTTP callback failed", exc_info=inner or exc)
                self._reject_in_turn(SystemFailure("internal error while reading the request"))
        except httptools.HttpParserError as exc:
            self._reject_in_turn(InvalidParameter(f"malformed HTTP request: {exc}"))

    def eof_received(self) -> bool:
        if self._raw is not None:
            # A hijacked client half-closes when its stdin ends; output must keep flowing.
            self._raw.reader.feed_eof()
            return True
        if self._closing:
            return False  # the client read the answer and closed: the lingering close is over
        if self._stream is not None:
            self._stream.feed_eof()
        if not self.input_ended.done():
            self.input_ended.set_result(None)
        return self._busy  # keep the write side open for a response in progress

    # -- httptools callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._closing:  # a request pipelined after the one that ended the connection: stop parsing
            raise _Closing()
        self._arm_timer(self._head_timeout)
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body_parts = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise HeadersTooLarge("request URL or headers too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES or len(self._headers) > MAX_HEADERS:
            raise HeadersTooLarge("request URL or headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._arm_timer(None)
        method = self._parser.get_method().decode("ascii", "replace")
        req = Request(self, method, self._url.decode("latin-1"), self._headers)
        # Per request: a pipelined "Connection: close" must not cut the answers queued before it.
        req.keep_alive = self._parser.should_keep_alive()
        self._current = req
        self._streamed = self.app.route(req)
        if self._streamed:
            self._stream = req.body_stream = asyncio.StreamReader(limit=2**20)
            self._stream.set_transport(self.transport)
            self._body_left = self._content_length()
            self._enqueue(req)
        elif "content-length" in self._headers and (self._content_length() or 0) > self.app.max_body():
            raise TooLarge("request body too large")  # at once: no need to wait for a body that is refused

    def _content_length(self) -> int | None:
        """The declared body length; None for a chunked body (llhttp validated the framing headers)."""
        if "transfer-encoding" in self._headers:
            return None
        try:
            return int(self._headers.get("content-length", "0"))
        except ValueError:
            return None

    def on_body(self, body: bytes) -> None:
        if self._streamed:
            if self._body_left is not None:
                self._body_left -= len(body)
            if self._stream is not None:  # else the request was answered without it: dropped
                self._stream.feed_data(body)
            return
        self._body_len += len(body)
        if self._body_len > self.app.max_body():
            raise TooLarge("request body too large")
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        req = self._current
        assert req is not None
        if self._streamed:
            if self._stream is not None:
                self._stream.feed_eof()
            self._stream = None
            self._current = None
            return
        req.body = b"".join(self._body_parts)
        self._current = None
        self._enqueue(req)

    # -- dispatch ---------------------------------------------------------------------------------------
    def _enqueue(self, req: Request) -> None:
        if self._closing:
            return  # pipelined after a request that ended the connection
        if self._busy:
            self._pending.append(req)
            if len(self._pending) > 16:
                self.transport.pause_reading()
            return
        self._run(req)

    def _run(self, req: Request) -> None:
        self._busy = True
        self._active = req
        self._keep_alive = req.keep_alive
        self._head_only = req.method == "HEAD"
        result = self.app.handle(req)
        if isinstance(result, Response):
            self.write_response(result)
            self._finish()
        else:
            task = asyncio.ensure_future(result)
            task.add_done_callback(self._async_done)

    def _async_done(self, task: asyncio.Future[Response | None]) -> None:
        if task.cancelled():
            self.transport.close()
            return
        exc = task.exception()
        if exc is not None:
            # The app turns every error into a response; reaching here means the connection broke.
            self.transport.close()
            return
        response = task.result()
        if response is not None:
            self.write_response(response)
        if self._raw is None:
            self._finish()

    @property
    def hijacked(self) -> bool:
        """The connection was taken over for raw bytes."""
        return self._raw is not None

    def _finish(self) -> None:
        self._busy = False
        self.streaming = False
        if self._closing:
            return
        unread = self._unread_body()
        self._active = None
        if unread:
            if not self._keep_alive or not self._may_drop_rest():
                self._close_lingering()
                return
            self._drop_rest()
        if not self._keep_alive or (self.input_ended.done() and not self._pending and self._rejected is None):
            self.transport.close()
            return
        if self._pending:
            if len(self._pending) <= 16 and self._rejected is None:
                self.transport.resume_reading()
            self._run(self._pending.popleft())
        elif self._rejected is not None:
            self._reject(self._rejected)
        elif self._deadline is None and not self.closed.done():
            self._arm_timer(self._idle_timeout)

    # -- a body left unread -----------------------------------------------------------------------------
    def _unread_body(self) -> bool:
        """The request being answered still has streamed body on the way that its handler did not read."""
        return self._active is not None and self._active is self._current and self._streamed

    def _may_drop_rest(self) -> bool:
        if self._body_left is None or self._body_left > DISCARD_LIMIT or self._current is None:
            return False
        # A client waiting for "100 Continue" may never send the body after an answer: what follows could be
        # its next request, not the rest of this one (Go closes then too).
        return "100-continue" not in self._current.headers.get("expect", "").lower()

    def _closes_after_answer(self) -> bool:
        """Decide, as the answer's head goes out, whether the connection survives an unread body."""
        if self._unread_body() and not self._may_drop_rest():
            self._keep_alive = False
            self._hang_up = True
        return self._hang_up

    def _drop_rest(self) -> None:
        """Read and drop the small rest of an answered request's body; the next request follows it."""
        stream, self._stream = self._stream, None
        if self._current is not None:
            self._current.body_stream = None  # its handler is done: what it left buffered goes now
        if stream is not None:
            stream.feed_eof()
        self.transport.resume_reading()  # the body stream may have stopped reading when its buffer filled

    def _close_lingering(self) -> None:
        """End the connection after what was written without resetting it (see LINGER)."""
        if self._closing:
            return
        self._closing = True
        self._gone()  # nothing more is written, and handlers waiting on the client stop
        self._stream = None
        self._pending.clear()
        self._arm_timer(None)
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # after what is buffered: the client reads the answer, then EOF
        self._linger = asyncio.get_running_loop().call_later(LINGER, self.transport.close)

    # -- writing ----------------------------------------------------------------------------------------
    def _head(self, status: int, headers: list[tuple[str, str]], date: bool = True) -> bytearray:
        out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, STATUS_TEXT.get(status, "Unknown").encode()))
        out += self.app.common_headers
        for name, value in headers:
            out += b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        if date:
            out += _date_header()
        return out

    def write_response(self, resp: Response) -> None:
        """Write a complete response."""
        if self.closed.done():
            return
        head = resp.encoded_head
        if head is None:  # encoded once per response object: constant responses are reused
            headers = list(resp.headers)
            if resp.content_type and resp.status != 304:
                headers.append(("Content-Type", resp.content_type))
            if resp.status not in (204, 304):
                headers.append(("Content-Length", str(len(resp.body))))
            resp.encoded_head = head = bytes(self._head(resp.status, headers, date=False))
        closing = (self._streamed or self._hang_up) and self._closes_after_answer()
        tail = _CLOSE + _date_header() if closing else _date_header()
        if resp.status in (204, 304) or self._head_only:
            self.transport.write(b"%b%b\r\n" % (head, tail))
        else:
            self.transport.write(b"%b%b\r\n%b" % (head, tail, resp.body))

    async def start_stream(
        self, status: int, content_type: str, extra: list[tuple[str, str]]
    ) -> StreamWriter:
        """Send headers for a chunked body and return its writer."""
        self.streaming = True
        headers = [("Content-Type", content_type), ("Transfer-Encoding", "chunked"), *extra]
        out = self._head(status, headers)
        if self._closes_after_answer():
            out += _CLOSE
        out += b"\r\n"
        if not self.closed.done():
            self.transport.write(out)
        return StreamWriter(self)

    def hijack(self, content_type: str, upgrade: bool) -> RawStream:
        """Answer 101 (or 200 for old clients) and switch the connection to raw bytes."""
        if upgrade:
            head = (
                b"HTTP/1.1 101 UPGRADED\r\nContent-Type: %s\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                % content_type.encode()
            )
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n\r\n" % content_type.encode()
        raw = RawStream(self)
        self._raw = raw
        self.streaming = True
        if self._upgrade_tail:
            raw.reader.feed_data(self._upgrade_tail)
            self._upgrade_tail = b""
        self._pending.clear()
        self.transport.resume_reading()
        if not self.closed.done():
            self.transport.write(head)
        return raw

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark."""
        if self.closed.done():
            raise ClientGone()
        if not self._paused_writing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self, exc: Exception | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def _arm_timer(self, seconds: float | None) -> None:
        """(Re)start the head/idle timer, or stop it with None.

        Only a deadline is moved per request; the one timer handle re-arms itself when it fires early.
        Creating and cancelling a timer for every request cost more than parsing the request.
        """
        if seconds is None:
            self._deadline = None
            return
        self._deadline = time.monotonic() + seconds  # the loop's clock (asyncio uses time.monotonic)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None or self.closed.done():
            return
        if time.monotonic() < self._deadline:
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._check_deadline)
            return
        self._deadline = None
        self._timed_out()

    def _timed_out(self) -> None:
        if not self._busy and self._raw is None:  # never cut a response or a hijacked stream
            self.transport.close()

    def _reject_in_turn(self, exc: DockyardError) -> None:
        """:meth:`_reject`, after the requests before the bad input are answered (responses stay in order)."""
        if self._busy:
            self._rejected = exc
            self.transport.pause_reading()
            return
        self._reject(exc)

    def _reject(self, exc: DockyardError) -> None:
        """Answer a request that could not be parsed (status from the one error table) and hang up."""
        self._head_only = False
        self._hang_up = True
        self.write_response(error_response(exc))
        self._close_lingering()


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """The ``Date`` header line, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, b"Date: %s\r\n" % email.utils.formatdate(now, usegmt=True).encode())
    return _date_cache[1]
