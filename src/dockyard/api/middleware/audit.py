"""Audit stage: one record per API call, and no mutating call without a record on disk first.

A mutating call (anything but GET/HEAD, plus the websocket attach that can write to a container) gets a
``start`` record that is written *before* the handler runs; when that write fails the call is refused with
503, so nothing changes unaudited. Every call, reads included, then gets a ``done`` record with its status,
bytes, duration and the authorization decision. Records leave this stage as tuples of raw values: the
writer process formats and chains them (:mod:`dockyard.security.audit_pipe` says why).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from dockyard.api.app import Route
from dockyard.api.messages import Request
from dockyard.errors import Unavailable
from dockyard.security.audit_pipe import AuditLog

_READ_METHODS = ("GET", "HEAD")
_WRITING_READS = frozenset({"ContainerAttachWebsocket"})


def is_mutating(method: str, route: Route | None) -> bool:
    """Whether a call may change state (and so must not run unaudited)."""
    return method not in _READ_METHODS or (route is not None and route.operation in _WRITING_READS)


class AuditMiddleware:
    """The ``Middleware`` that writes the audit log."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def before(self, req: Request, route: Route | None) -> Awaitable[None] | None:
        """For a mutating call, the wait until its ``start`` record is on disk (503 when it cannot be)."""
        if req.method in _READ_METHODS and (route is None or route.operation not in _WRITING_READS):
            return None  # (is_mutating, inlined: this runs for every request)
        return self._durable_start(req, route)

    async def _durable_start(self, req: Request, route: Route | None) -> None:
        op = route.operation if route is not None else None
        if self.audit.failure is not None:
            raise Unavailable(f"audit log unavailable ({self.audit.failure}): refusing {op or req.method} "
                              "so that it does not run unaudited")  # fmt: skip
        decision = req.decision.audit_fields if req.decision is not None else None
        params = req.params
        target = (params.get("id") or params.get("name")) if params else None
        try:
            await self.audit.add_durable((
                "start", req.conn.identity.audit_json, req.method, req.path, op, target, decision,
                req.request_id, None, None, None, time.monotonic(),
            ))  # fmt: skip
        except OSError as exc:
            raise Unavailable(f"audit log unavailable ({exc.strerror or exc}): refusing {op or req.method} "
                              "so that it does not run unaudited") from None  # fmt: skip

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Queue the outcome: a tuple of values the request already holds (this runs for every request)."""
        params = req.params
        decision = req.decision
        self.audit.add((
            "done", req.conn.identity.audit_json, req.method, req.path,
            route.operation if route is not None else None,
            (params.get("id") or params.get("name")) if params else None,
            decision.audit_fields if decision is not None else None,
            req.request_id, status, nbytes, started, time.monotonic(),
        ))  # fmt: skip
