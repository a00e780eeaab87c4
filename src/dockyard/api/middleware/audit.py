"""Audit stage: one record per API call, and no mutating call without a record on disk first.

A mutating call (anything but GET/HEAD, plus the websocket attach that can write to a container) gets a
``start`` record that is written *before* the handler runs; when that write fails the call is refused with
503, so nothing changes unaudited. Every call, reads included, then gets a ``done`` record with its status,
bytes, duration and the authorization decision. Reads are never held up by the log: their records are
buffered, and while the disk is failing they continue (and are dropped, counted, once the backlog is large).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Any

from dockyard.api.app import Route
from dockyard.api.messages import Request
from dockyard.errors import Unavailable
from dockyard.security.audit import AuditLog
from dockyard.security.identity import Identity

from .authz import AuthzMiddleware

_READ_METHODS = ("GET", "HEAD")
_WRITING_READS = frozenset({"ContainerAttachWebsocket"})


def caller(who: Identity) -> dict[str, Any]:
    """The identity as the audit log shows it."""
    if who.cert_cn is not None or who.cert_fingerprint is not None:
        return {"transport": who.transport, "cert_cn": who.cert_cn, "cert_fingerprint": who.cert_fingerprint,
                "cert_sans": list(who.cert_sans)}  # fmt: skip
    return {"transport": who.transport, "uid": who.uid, "gid": who.gid, "pid": who.pid, "user": who.user}


_second: list[Any] = [-1, ""]  # the formatted second, cached: strftime per call costs more than the rest


def _now() -> str:
    t = time.time()
    whole = int(t)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((t - whole) * 1e6):06d}Z"


def _js(value: str | None) -> str:
    """A JSON string (or null); plain ASCII, the common case, skips the encoder."""
    if value is None:
        return "null"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def is_mutating(method: str, route: Route | None) -> bool:
    """Whether a call may change state (and so must not run unaudited)."""
    return method not in _READ_METHODS or (route is not None and route.operation in _WRITING_READS)


class AuditMiddleware:
    """The ``Middleware`` that writes the audit log."""

    def __init__(self, audit: AuditLog, authz: AuthzMiddleware | None = None) -> None:
        self.audit = audit
        self.authz = authz
        if authz is not None:
            authz.keep_decisions = True
        self._last_who: Identity | None = None
        self._last_caller: dict[str, Any] = {}
        self._caller_texts: dict[int, tuple[Identity, str]] = {}

    def before(self, req: Request, route: Route | None) -> Awaitable[None] | None:
        """For a mutating call, the wait until its ``start`` record is on disk (503 when it cannot be)."""
        if not is_mutating(req.method, route):
            return None
        return self._durable_start(req, route)

    async def _durable_start(self, req: Request, route: Route | None) -> None:
        op = route.operation if route is not None else ""
        if self.audit.failure is not None:
            raise Unavailable(f"audit log unavailable ({self.audit.failure}): refusing {op or req.method} "
                              "so that it does not run unaudited")  # fmt: skip
        entry = self._entry(req, route, "start")
        decision = self.authz.decision_of(req) if self.authz is not None else None
        if decision is not None:
            entry["decision"], entry["rule"] = decision.verdict, decision.rule
        pending = self.audit.record(entry, durable=True)
        assert pending is not None
        try:
            await pending
        except OSError as exc:
            raise Unavailable(f"audit log unavailable ({exc.strerror or exc}): refusing {op or req.method} "
                              "so that it does not run unaudited") from None  # fmt: skip

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Record the outcome (built as text from cached fragments: this runs for every request)."""
        text = self._entry_json(req, route, "done")
        decision = self.authz.pop_decision(req) if self.authz is not None else None
        if decision is not None:
            text += f',"decision":{_js(decision.verdict)},"rule":{_js(decision.rule)}'
            if decision.reason:
                text += f',"reason":{_js(decision.reason)}'
        duration = (time.monotonic() - started) * 1000
        self.audit.record_json(f'{text},"status":{status},"bytes":{nbytes},"duration_ms":{duration:.3f}')

    def _caller(self, who: Identity) -> dict[str, Any]:
        if who is not self._last_who:  # one identity per connection: keep-alive callers hit this cache
            self._last_who, self._last_caller = who, caller(who)
        return self._last_caller

    def _caller_json(self, who: Identity) -> str:
        """The caller's JSON, cached per identity object (one per connection; keyed by ``id`` because
        hashing the frozen dataclass field by field cost more than the lookup should)."""
        cached = self._caller_texts.get(id(who))
        if cached is not None and cached[0] is who:
            return cached[1]
        if len(self._caller_texts) >= 4096:
            self._caller_texts.clear()
        text = json.dumps(caller(who), separators=(",", ":"))
        self._caller_texts[id(who)] = (who, text)
        return text

    def _entry_json(self, req: Request, route: Route | None, phase: str) -> str:
        caller_json = self._caller_json(req.identity)
        params = req.params
        target = (params.get("id") or params.get("name")) if params else None
        # The method is an HTTP token (llhttp accepts no quotes or escapes there) and the operation is ours:
        # only the path and the target come from the client as free text.
        operation = f'"{route.operation}"' if route is not None else "null"
        return (
            f'{{"time":"{_now()}","request_id":"{req.request_id}","phase":"{phase}",'
            f'"caller":{caller_json},"method":"{req.method}","path":{_js(req.path)},'
            f'"operation":{operation},"target":{_js(target)}'
        )

    def _entry(self, req: Request, route: Route | None, phase: str) -> dict[str, Any]:
        params = req.params
        return {
            "time": _now(),
            "request_id": req.request_id,
            "phase": phase,
            "caller": self._caller(req.identity),
            "method": req.method,
            "path": req.path,
            "operation": route.operation if route is not None else None,
            "target": params.get("id") or params.get("name") if params else None,
        }
