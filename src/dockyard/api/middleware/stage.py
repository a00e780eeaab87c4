"""The security stage: authorization, then audit, around every request.

Authorization (optional: only with ``--policy``) is :class:`~.authz.AuthzMiddleware`'s; this stage runs it
and then the audit log's part. A mutating call (anything but GET/HEAD, plus the websocket attach that can
write to a container) gets a ``start`` record that is on disk *before* the handler runs; when that write
fails the call is refused with 503, so nothing changes unaudited. Every call, reads included, then gets a
``done`` record with its status, bytes, duration and the authorization decision.

Why one stage and not an authorization and an audit middleware: the security work on a plain read has a
budget of a tenth of serving it (about 3 µs of a 30 µs ``GET /_ping``), and two stages cost two calls before
and two after every request, a third of that budget. So the record is built here, inline, as a tuple of
values the request already holds, and queued; the audit writer process formats and chains it
(:mod:`dockyard.security.audit_pipe` says why).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from dockyard.api.app import Route
from dockyard.api.messages import Request
from dockyard.errors import Unavailable
from dockyard.security.audit_pipe import AuditLog
from dockyard.security.audit_writer import Shape
from dockyard.security.identity import Identity

from .authz import AuthzMiddleware

_READ_METHODS = ("GET", "HEAD")
_WRITING_READS = frozenset({"ContainerAttachWebsocket"})


class SecurityStage:
    """The ``Middleware`` for authorization (when a policy is given) and the audit log (unless it is off)."""

    def __init__(self, authz: AuthzMiddleware | None, audit: AuditLog | None) -> None:
        self.authz = authz
        self.audit = audit
        # Per caller (one identity per connection) and path, the shape of its done records: what all its
        # calls there share. One object per shape means marshal sends it once per frame and the writer
        # makes its template once, and the per-request record shrinks to six values.
        self._shapes: dict[Identity, dict[str, Shape]] = {}

    def before(self, req: Request, route: Route | None) -> Awaitable[None] | None:
        """Authorize (raising to refuse); for a mutating call, the wait until its ``start`` record is out."""
        authz = self.authz
        if authz is not None:
            # AuthzMiddleware.before's common case, inlined: the policy in force has this caller's decision
            # for this operation cached, and it is a plain allow. Anything else takes the full path.
            per_caller = authz.holder.policy.decided.get(req.conn.identity) if route is not None else None
            decision = per_caller.get(route.operation) if per_caller is not None else None  # type: ignore[union-attr]
            if decision is not None and decision.plain:
                req.decision = decision
            else:
                authz.before(req, route)
        if self.audit is None or (
            req.method in _READ_METHODS and (route is None or route.operation not in _WRITING_READS)
        ):
            return None  # a read: nothing to wait for (the websocket attach writes, so it is not one)
        return self._durable_start(self.audit, req, route)

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Release what authorization counted; queue the ``done`` record (a tuple: the writer formats it)."""
        if self.authz is not None and self.authz.streams:
            self.authz.after(req, route, status, nbytes, started)
        audit = self.audit
        if audit is None:
            return
        decision = req.decision
        fields = decision.audit_fields if decision is not None else None
        per_caller = self._shapes.get(req.conn.identity)
        shape = per_caller.get(req.path) if per_caller is not None else None
        if shape is None or shape[6] is not fields or shape[2] != req.method:
            shape = self._new_shape(req, route, fields)
        audit.queue.append((shape, req.request_id, status, nbytes, started, time.monotonic()))
        if audit.timer is None:
            audit.arm()

    def _new_shape(self, req: Request, route: Route | None, fields: tuple[str, str, str] | None) -> Shape:
        shape = _shape("done", req, route, fields)
        who = req.conn.identity
        per_caller = self._shapes.get(who)
        if per_caller is None:
            if len(self._shapes) >= 4096:  # identities of closed connections go in one sweep
                self._shapes.clear()
            per_caller = self._shapes[who] = {}
        if len(per_caller) >= 256:
            per_caller.clear()
        per_caller[req.path] = shape
        return shape

    @staticmethod
    async def _durable_start(audit: AuditLog, req: Request, route: Route | None) -> None:
        if audit.failure is not None:
            raise _unaudited(audit.failure, req, route)
        fields = req.decision.audit_fields if req.decision is not None else None
        try:
            shape = _shape("start", req, route, fields)
            await audit.add_durable((shape, req.request_id, None, None, None, time.monotonic()))
        except OSError as exc:
            raise _unaudited(str(exc.strerror or exc), req, route) from None


def _unaudited(why: str, req: Request, route: Route | None) -> Unavailable:
    """The refusal of a mutating call whose ``start`` record cannot be written."""
    what = route.operation if route is not None else req.method
    return Unavailable(f"audit log unavailable ({why}): refusing {what} so that it does not run unaudited")


def _shape(phase: str, req: Request, route: Route | None, fields: tuple[str, str, str] | None) -> Shape:
    """What a record shares with the caller's other calls to the same path (see audit_writer.Shape)."""
    params = req.params
    target = (params.get("id") or params.get("name")) if params else None
    op = route.operation if route is not None else None
    return (phase, req.conn.identity.audit_json, req.method, req.path, op, target, fields)
