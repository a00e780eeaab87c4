"""The security stage's audit records: shapes reused per caller and path, never across what differs."""

from __future__ import annotations

from typing import Any

from dockyard.api.app import Route, Router
from dockyard.api.messages import Request
from dockyard.api.middleware.stage import SecurityStage
from dockyard.security.identity import Identity
from dockyard.security.policy import Decision


class _Conn:
    def __init__(self, who: Identity) -> None:
        self.identity = who


class _Queue:
    """The part of AuditLog the stage's hot path uses."""

    def __init__(self) -> None:
        self.queue: list[Any] = []
        self.timer = object()  # armed: the stage must not call arm()
        self.failure = None


def _route(method: str, pattern: str, op: str) -> Route:
    router = Router()
    router.add(method, pattern, op, lambda r: None)
    return router.routes()[0]


def _call(stage: SecurityStage, conn: _Conn, method: str, path: str, route: Route, **params: str) -> Any:
    req = Request(conn, method, path, {})  # type: ignore[arg-type]
    req.params = params
    req.request_id = "r"
    stage.after(req, route, 200, 2, 0.0)
    return stage.audit.queue[-1]  # type: ignore[union-attr]


def test_shapes_are_shared_per_caller_and_path_and_rebuilt_when_anything_differs() -> None:
    audit = _Queue()
    stage = SecurityStage(None, audit)  # type: ignore[arg-type]
    alice, bob = _Conn(Identity("unix", uid=1, user="a")), _Conn(Identity("unix", uid=2, user="b"))
    ping = _route("GET", "/_ping", "SystemPing")
    inspect = _route("GET", "/containers/{id}/json", "ContainerInspect")
    first = _call(stage, alice, "GET", "/_ping", ping)
    again = _call(stage, alice, "GET", "/_ping", ping)
    assert again[0] is first[0] and first[0][:6] == ("done", alice.identity.audit_json, "GET", "/_ping",
                                                     "SystemPing", None)  # fmt: skip
    assert _call(stage, bob, "GET", "/_ping", ping)[0][1] == bob.identity.audit_json  # another caller
    assert _call(stage, alice, "HEAD", "/_ping", ping)[0][2] == "HEAD"  # another method, same path
    x = _call(stage, alice, "GET", "/containers/x/json", inspect, id="x")
    y = _call(stage, alice, "GET", "/containers/y/json", inspect, id="y")
    assert (x[0][5], y[0][5]) == ("x", "y")  # the target comes with the path


def test_a_new_decision_makes_a_new_shape() -> None:
    audit = _Queue()
    stage = SecurityStage(None, audit)  # type: ignore[arg-type]
    conn = _Conn(Identity("unix", uid=1, user="a"))
    ping = _route("GET", "/_ping", "SystemPing")
    shapes = []
    for decision in (Decision(True, True, "admins"), Decision(True, False, "ci", "reloaded: now denied")):
        req = Request(conn, "GET", "/_ping", {})  # type: ignore[arg-type]
        req.decision = decision
        stage.after(req, ping, 200, 2, 0.0)
        shapes.append(audit.queue[-1][0])
    assert shapes[0][6] == ("allow", "admins", "") and shapes[1][6] == (
        "audit-deny",
        "ci",
        "reloaded: now denied",
    )
