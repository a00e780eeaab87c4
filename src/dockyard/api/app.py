"""The application: route table, per-request pipeline (request id → version window → middleware → handler),
error conversion. Handlers are plain functions (answered inline) or coroutines (run as tasks).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dockyard import __version__
from dockyard.api import version
from dockyard.api.errors import error_response
from dockyard.api.http import ClientGone, Request, Response

log = logging.getLogger("dockyard.api")

Handler = Callable[[Request], Any]
_PARAM = re.compile(r"\{(\w+)(:path)?\}")


@dataclass(frozen=True)
class Route:
    """One API operation: method + path pattern → handler."""

    method: str
    pattern: str
    operation: str  # the API's operation name, e.g. ContainerCreate
    handler: Handler
    is_async: bool
    stream_body: bool


class Router:
    """Static paths by dict lookup; parameterized paths by ordered regexes."""

    def __init__(self) -> None:
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: dict[str, list[tuple[re.Pattern[str], Route]]] = {}

    def add(self, method: str, pattern: str, operation: str, handler: Handler, *, stream_body: bool = False) -> None:
        """Register a handler. ``{name}`` matches one path segment, ``{name:path}`` the rest of the path."""
        route = Route(method, pattern, operation, handler, inspect.iscoroutinefunction(handler), stream_body)
        if "{" not in pattern:
            self._static[(method, pattern)] = route
            if method == "GET":
                self._static.setdefault(("HEAD", pattern), route)
            return
        regex = re.compile(
            "^" + _PARAM.sub(lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})", pattern) + "$"
        )
        self._dynamic.setdefault(method, []).append((regex, route))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """Find the route for a request, with its path parameters."""
        route = self._static.get((method, path))
        if route is not None:
            return route, {}
        for regex, candidate in self._dynamic.get(method, ()):
            m = regex.match(path)
            if m is not None:
                return candidate, m.groupdict()
        return None

    def routes(self) -> list[Route]:
        """Every registered route."""
        return [*self._static.values(), *(r for rs in self._dynamic.values() for _, r in rs)]


class Middleware(Protocol):
    """A stage around every routed request (authorization, audit)."""

    async def before(self, req: Request, route: Route) -> None:
        """Raise a DockyardError to refuse the request."""
        ...

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Observe the outcome of a request."""
        ...


_NOT_FOUND = Response(404, b'{"message":"page not found"}\n')


class App:
    """Implements the HTTP connection's Dispatcher."""

    def __init__(self, router: Router, middleware: list[Middleware] | None = None, max_body: int = 64 << 20) -> None:
        self.router = router
        self.middleware = middleware or []
        self._max_body = max_body
        self._ids = itertools.count(1)
        self._common = (
            b"Api-Version: %s\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/%s-dockyard (linux)\r\n"
            % (version.MAX_VERSION.encode(), __version__.encode())
        )

    @property
    def common_headers(self) -> bytes:
        """Headers on every response (Docker's clients read Api-Version from ``/_ping``)."""
        return self._common

    def max_body(self) -> int:
        """Largest buffered request body."""
        return self._max_body

    def route(self, req: Request) -> bool:
        """Resolve the route when the headers are in (a streamed body needs its handler early)."""
        req.version, path = version.split_path(req.path)
        found = self.router.match(req.method, path)
        if found is None:
            return False
        req.route, req.params = found
        return bool(req.route.stream_body)

    def handle(self, req: Request) -> Response | Awaitable[Response | None]:
        """Run one request through the pipeline."""
        req.request_id = "%x" % next(self._ids)
        route: Route | None = req.route
        if route is None or self.middleware or route.is_async:
            return self._handle_async(req, route)
        started = time.monotonic()
        try:
            version.check(req.version)
            resp = route.handler(req)
            if not isinstance(resp, Response):  # a plain handler that chose to go asynchronous
                return self._finish_async(req, route, resp, started)
        except Exception as exc:
            resp = error_response(exc, req.request_id)
        self._after(req, route, resp.status, len(resp.body), started)
        return resp

    async def _finish_async(
        self, req: Request, route: Route, pending: Awaitable[Response], started: float
    ) -> Response:
        try:
            resp = await pending
        except Exception as exc:
            resp = error_response(exc, req.request_id)
        self._after(req, route, resp.status, len(resp.body), started)
        return resp

    async def _handle_async(self, req: Request, route: Route | None) -> Response | None:
        started = time.monotonic()
        try:
            for stage in self.middleware:
                await stage.before(req, route)  # type: ignore[arg-type]
            if route is None:
                resp = _NOT_FOUND
            else:
                version.check(req.version)
                result = route.handler(req)
                resp = result if isinstance(result, Response) else await result
        except ClientGone:
            self._after(req, route, 499, 0, started)
            return None
        except Exception as exc:
            if req.conn.streaming:
                log.error("request %s failed after its response started: %s", req.request_id, exc)
                req.conn.transport.close()
                self._after(req, route, 500, 0, started)
                return None
            resp = error_response(exc, req.request_id)
        if resp is None:
            self._after(req, route, 101 if req.conn.hijacked else 200, 0, started)
            return None
        self._after(req, route, resp.status, len(resp.body), started)
        return resp

    def _after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        for stage in self.middleware:
            stage.after(req, route, status, nbytes, started)
