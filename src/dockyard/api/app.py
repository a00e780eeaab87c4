"""The application: route table, per-request pipeline (request id → version window → security stage →
handler), error conversion. Handlers are plain functions (answered inline) or coroutines (run as tasks).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dockyard import __version__
from dockyard.api import version
from dockyard.api.errors import error_response
from dockyard.api.messages import ClientGone, Request, Response

if TYPE_CHECKING:
    from dockyard.security.audit_records import RecordBuffer

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
    stream_body: bool


class Router:
    """Static paths by dict lookup; parameterized paths by ordered regexes."""

    def __init__(self) -> None:
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: dict[str, list[tuple[re.Pattern[str], Route]]] = {}

    def add(
        self, method: str, pattern: str, operation: str, handler: Handler, *, stream_body: bool = False
    ) -> None:
        """Register a handler. ``{name}`` matches one path segment, ``{name:path}`` the rest of the path."""
        route = Route(method, pattern, operation, handler, stream_body)
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


# A caller's plain read of one path (allowed, nothing counted, nothing confined), as the security stage
# planned it: (method, done-record shape). The stage keeps a connection's plans on the connection
# (``HttpConnection.plans``, by request target); the pipeline answers a request that has one without
# calling the stage: see App.handle.
Plan = tuple[str, Any]


class Middleware(Protocol):
    """The stage around every request (authorization and audit: api.middleware.stage)."""

    # Where the pipeline queues a planned read's record (the audit log's, for its lifetime), or None.
    queue: RecordBuffer | None

    def before(self, req: Request, route: Route | None) -> Awaitable[None] | None:
        """Raise a DockyardError to refuse the request; return an awaitable only when the stage must wait
        (most requests pass every stage without one, and are then answered without a task)."""
        ...

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Observe the outcome of a request."""
        ...

    def arm(self) -> None:
        """Records were queued on an empty audit queue (of a plan): schedule their hand-over."""
        ...


_NOT_FOUND = Response(404, b'{"message":"page not found"}\n')


class App:
    """Implements the HTTP connection's Dispatcher."""

    def __init__(self, router: Router, stage: Middleware | None = None, max_body: int = 64 << 20) -> None:
        self.router = router
        self.stage = stage
        # One stage, called directly (a loop over a list of them cost more per request than the stage's own
        # work on a read), and not at all for a planned read (see handle).
        self._before = stage.before if stage is not None else None
        self._after = stage.after if stage is not None else None
        self._queue = stage.queue if stage is not None else None
        self._max_body = max_body
        self._ids = itertools.count(1)
        self._common = (
            b"Api-Version: %s\r\nDocker-Experimental: false\r\nOstype: linux\r\n"
            b"Server: Docker/%s-dockyard (linux)\r\n" % (version.MAX_VERSION.encode(), __version__.encode())
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
        """Run one request through the pipeline: inline while nothing needs to wait, as a task from there."""
        req.request_id = f"{next(self._ids):x}"
        route: Route | None = req.route
        started = time.monotonic()
        # A read the stage planned for this connection: its decision and its audit record's shape are known,
        # so the stage's two calls are left out. They cost, in instructions, more than a third of all the
        # security work on GET /_ping; the goal for that work is a tenth of the request (README,
        # benchmarks). The target and method give the route (the router does not change), so the plan
        # need not be checked against it.
        plans = req.conn.plans
        plan = plans.get(req.path) if plans is not None else None
        if plan is not None and plan[0] != req.method:
            plan = None
        try:
            if plan is None and self._before is not None:
                pending = self._before(req, route)
                if pending is not None:
                    return self._guarded(req, route, started, self._rest(req, route, pending))
            result = self._call_handler(req, route)
            if not isinstance(result, Response):
                req.plan = plan  # for the stage's after(), when the handler is done
                return self._guarded(req, route, started, result)
            resp = result
        except Exception as exc:
            resp = error_response(exc, req.request_id)
        if plan is not None:
            queue = self._queue
            if queue is not None:
                if not queue:
                    self.stage.arm()  # type: ignore[union-attr]
                queue.add(plan[1], req.request_id, resp.status, len(resp.body), started)  # ended: now
        elif self._after is not None:
            self._after(req, route, resp.status, len(resp.body), started)
        return resp

    def _call_handler(self, req: Request, route: Route | None) -> Response | Awaitable[Response | None]:
        if route is None:
            return _NOT_FOUND
        version.check(req.version)
        result: Response | Awaitable[Response | None] = route.handler(req)
        return result

    async def _rest(self, req: Request, route: Route | None, pending: Awaitable[None]) -> Response | None:
        """The handler, once the stage's wait is over."""
        await pending
        result = self._call_handler(req, route)
        return result if isinstance(result, Response) else await result

    async def _guarded(
        self, req: Request, route: Route | None, started: float, work: Awaitable[Response | None]
    ) -> Response | None:
        """Await the rest of a request; errors become responses (or a closed connection once streaming)."""
        try:
            resp = await work
        except ClientGone:
            self._observe(req, route, 499, 0, started)
            return None
        except Exception as exc:
            if req.conn.streaming:
                log.error("request %s failed after its response started: %s", req.request_id, exc)
                req.conn.transport.close()
                self._observe(req, route, 500, 0, started)
                return None
            resp = error_response(exc, req.request_id)
        if resp is None:
            self._observe(req, route, 101 if req.conn.hijacked else 200, 0, started)
            return None
        self._observe(req, route, resp.status, len(resp.body), started)
        return resp

    def _observe(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        if self._after is not None:
            self._after(req, route, status, nbytes, started)
