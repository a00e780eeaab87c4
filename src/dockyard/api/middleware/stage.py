"""The security stage: authorization, then audit, around every request.

Authorization (optional: only with ``--policy``) is :class:`~.authz.AuthzMiddleware`'s; this stage runs it
and then the audit log's part. A mutating call (anything but GET/HEAD, plus the websocket attach that can
write to a container) gets a ``start`` record that is on disk *before* the handler runs; when that write
fails the call is refused with 503, so nothing changes unaudited. Every call, reads included, then gets a
``done`` record with its status, bytes, duration and the authorization decision.

Why one stage and not an authorization and an audit middleware, and why plans: the security work on a
plain read has a budget of a tenth of serving it (about 2 µs of ``GET /_ping``), and in CPython a call
is a large part of that (measured in instructions under callgrind: the stage's two calls alone were a
third of it). So a caller's first plain read of a path (allowed, nothing counted, nothing confined) leaves
a *plan* on its connection: its method and done-record shape. The pipeline (``api.app.App.handle``)
answers the connection's next reads of that target from the plan without calling this stage, queueing the
record itself. Anything else (a mutating call, a limited or confined caller, an audit-only would-be
denial, an unrouted path) goes through :meth:`SecurityStage.before` and :meth:`SecurityStage.after`
every time. Plans are dropped when the policy is reloaded. The record is values the request already
holds, packed into the audit queue's buffer (:mod:`dockyard.security.audit_records`); the audit writer
process formats and chains it (:mod:`dockyard.security.audit_pipe` says why).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from dockyard.api.app import Plan, Route
from dockyard.api.messages import Request
from dockyard.errors import Unavailable
from dockyard.security.audit_pipe import AuditLog
from dockyard.security.audit_records import Shape

from .authz import AuthzMiddleware

if TYPE_CHECKING:
    from dockyard.api.http import HttpConnection

_READ_METHODS = ("GET", "HEAD")
# A connection keeps at most _PLANS_PER_CONNECTION plans, each holding its request target: only targets up
# to _PLAN_MAX_TARGET characters get one (a 64 KiB target per plan would let one connection pin 16 MiB).
_PLANS_PER_CONNECTION = 256
_PLAN_MAX_TARGET = 1024
_WRITING_READS = frozenset({"ContainerAttachWebsocket"})


class SecurityStage:
    """The ``Middleware`` for authorization (when a policy is given) and the audit log (unless it is off)."""

    def __init__(self, authz: AuthzMiddleware | None, audit: AuditLog | None) -> None:
        self.authz = authz
        self.audit = audit
        # The connections that have plans (api.app.Plan: kept on the connection, by request target, which
        # the pipeline answers without calling before() or after()), so that a reload can drop them all.
        # One shape object per connection and target also means a frame carries it once and the writer
        # formats its fixed part once.
        self._planned: weakref.WeakSet[HttpConnection] = weakref.WeakSet()
        # The pipeline queues planned reads' records here itself (App.handle: AuditLog.add inlined); the
        # same buffer for the log's lifetime.
        self.queue = audit.queue if audit is not None else None
        self._streams = authz.streams if authz is not None else {}

    def forget_plans(self) -> None:
        """Drop every plan (the policy changed: its decisions are in them)."""
        for conn in self._planned:
            conn.plans = None
        self._planned.clear()

    def arm(self) -> None:
        """Schedule the hand-over of the records just queued on an empty queue."""
        assert self.audit is not None
        self.audit.arm()

    def before(self, req: Request, route: Route | None) -> Awaitable[None] | None:
        """Authorize (raising to refuse); for a mutating call, the wait until its ``start`` record is out.

        A plain read also gets a plan, so that the caller's next reads of the path skip this stage.
        """
        if self.authz is not None:
            self.authz.before(req, route)  # raises to refuse
        if req.method not in _READ_METHODS or (route is not None and route.operation in _WRITING_READS):
            # Never planned: a plan skips authorization, and a write's may depend on its body.
            return self._durable_start(self.audit, req, route) if self.audit is not None else None
        if (
            route is not None
            and len(req.path) <= _PLAN_MAX_TARGET
            and (req.decision is None or req.decision.plain)
        ):
            req.plan = self._plan(req, route)
        return None

    def _plan(self, req: Request, route: Route) -> Plan:
        conn = req.conn
        plans = conn.plans
        if plans is None:
            plans = conn.plans = {}
            self._planned.add(conn)
        elif len(plans) >= _PLANS_PER_CONNECTION:
            plans.clear()
        plan = plans[req.path] = (req.method, _shape("done", req, route))
        return plan

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Release what authorization counted; queue the ``done`` record (packed: the writer formats it)."""
        if self._streams:
            self.authz.after(req, route, status, nbytes, started)  # type: ignore[union-attr]
        if self.audit is None:
            return
        # No plan: not a plain read, or refused before it got one.
        shape = req.plan[1] if req.plan is not None else _shape("done", req, route)
        self.audit.add(shape, req.request_id, status, nbytes, started)

    @staticmethod
    async def _durable_start(audit: AuditLog, req: Request, route: Route | None) -> None:
        if audit.failure is not None:
            raise _unaudited(audit.failure, req, route)
        try:
            await audit.add_durable(_shape("start", req, route), req.request_id)
        except OSError as exc:
            raise _unaudited(str(exc.strerror or exc), req, route) from None


def _unaudited(why: str, req: Request, route: Route | None) -> Unavailable:
    """The refusal of a mutating call whose ``start`` record cannot be written."""
    what = route.operation if route is not None else req.method
    return Unavailable(f"audit log unavailable ({why}): refusing {what} so that it does not run unaudited")


def _shape(phase: str, req: Request, route: Route | None) -> Shape:
    """What a record shares with the caller's other calls to the same path (see audit_records.Shape)."""
    params = req.params
    target = (params.get("id") or params.get("name")) if params else None
    op = route.operation if route is not None else None
    fields = req.decision.audit_fields if req.decision is not None else None
    return (phase, req.conn.identity.audit_json, req.method, req.path, op, target, fields)
