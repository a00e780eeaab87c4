"""The security stage and the pipeline's plans: a caller's plain reads skip the stage, nothing else does.

Driven through the real App pipeline with a real policy file; only the audit queue's hand-over is replaced
(the records stay in the queue, a real RecordBuffer, to look at).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dockyard.api.app import App, Router
from dockyard.api.messages import Request, Response
from dockyard.api.middleware.authz import AuthzMiddleware, PolicyHolder
from dockyard.api.middleware.stack import Security
from dockyard.api.middleware.stage import SecurityStage
from dockyard.security.audit_records import Record, RecordBuffer, Shape, unpack
from dockyard.security.identity import Identity

OK = Response(200, b"OK", "text/plain")

POLICY = """
mode = "enforce"
default = "deny"
[[rules]]
name = "admins"
match.uids = [0]
allow = ["*"]
[[rules]]
name = "readers"
match.uids = [1]
allow = ["read-only"]
[[rules]]
name = "limited"
match.uids = [2]
allow = ["read-only"]
limits = { requests_per_second = 1, burst = 2 }
"""


class _Conn:
    def __init__(self, who: Identity) -> None:
        self.identity = who
        self.streaming = False
        self.plans: dict[str, Any] | None = None  # as HttpConnection's


class _Audit:
    """The part of AuditLog the stage and the pipeline use: the queue and its hand-over timer."""

    def __init__(self) -> None:
        self.queue = RecordBuffer()
        self.armed = 0
        self.failure: str | None = None

    def arm(self) -> None:
        self.armed += 1

    def add(self, shape: Shape, rid: str, status: int, nbytes: int, started: float) -> None:
        if not self.queue:  # as AuditLog.add: armed when a record lands on an empty queue
            self.arm()
        self.queue.add(shape, rid, status, nbytes, started)

    async def add_durable(self, shape: Shape, rid: str) -> None:
        self.queue.add(shape, rid, None, None, None)

    def records(self) -> list[Record]:
        """The queued records (taken out and put back as they were: the buffer has no peek)."""
        records = unpack(*self.queue.take())
        for rec in records:
            self.queue.add(*rec)
        return records


class _Calls:
    """Counts the stage's before() calls (a planned read makes none)."""

    def __init__(self, stage: SecurityStage) -> None:
        self.before = 0
        inner = stage.before

        def counted(req: Request, route: Any) -> Any:
            self.before += 1
            return inner(req, route)

        stage.before = counted  # type: ignore[method-assign]


def _app(tmp_path: Path, policy: str = POLICY) -> tuple[App, SecurityStage, _Audit, _Calls, PolicyHolder]:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    holder = PolicyHolder(path)
    audit = _Audit()
    stage = SecurityStage(AuthzMiddleware(holder, None), audit)  # type: ignore[arg-type]
    calls = _Calls(stage)
    router = Router()
    router.add("GET", "/_ping", "SystemPing", lambda req: OK)
    router.add("GET", "/containers/{id}/json", "ContainerInspect", lambda req: OK)
    router.add("POST", "/containers/{id}/stop", "ContainerStop", lambda req: OK)
    return App(router, stage), stage, audit, calls, holder


def _call(app: App, conn: _Conn, method: str, path: str) -> tuple[int, Any]:
    """One request through the pipeline; its status and done record."""
    req = Request(conn, method, path, {})  # type: ignore[arg-type]
    app.route(req)
    resp = app.handle(req)
    if not isinstance(resp, Response):  # a mutating call waits for its start record
        resp = asyncio.run(resp)  # type: ignore[arg-type]
    assert isinstance(resp, Response)
    return resp.status, app.stage.audit.records()[-1]  # type: ignore[union-attr]


def test_a_callers_second_read_of_a_path_skips_the_stage_and_shares_the_shape(tmp_path: Path) -> None:
    app, _, audit, calls, _ = _app(tmp_path)
    alice, bob = _Conn(Identity("unix", uid=0, user="a")), _Conn(Identity("unix", uid=1, user="b"))
    _, first = _call(app, alice, "GET", "/_ping")
    _, again = _call(app, alice, "GET", "/_ping")
    assert calls.before == 1  # the second went by the plan
    assert again[0] is first[0] and first[0] == ("done", alice.identity.audit_json, "GET", "/_ping",
                                                 "SystemPing", None, ("allow", "admins", ""))  # fmt: skip
    assert again[1] != first[1] and again[2:4] == (200, 2)  # its own request id, status and bytes
    assert audit.armed == 1  # armed once, on the empty queue
    bobs = _call(app, bob, "GET", "/_ping")[1][0]
    assert bobs == (
        "done",
        bob.identity.audit_json,
        "GET",
        "/_ping",
        "SystemPing",
        None,
        ("allow", "readers", ""),
    )
    assert calls.before == 2  # another caller: its own plan
    assert _call(app, alice, "HEAD", "/_ping")[1][0][2] == "HEAD" and calls.before == 3  # another method
    x = _call(app, alice, "GET", "/containers/x/json")[1]
    y = _call(app, alice, "GET", "/containers/y/json")[1]
    assert (x[0][5], y[0][5]) == ("x", "y") and calls.before == 5  # the target comes with the path


def test_mutating_calls_and_limited_callers_always_go_through_the_stage(tmp_path: Path) -> None:
    app, _, audit, calls, _ = _app(tmp_path)
    admin, limited = _Conn(Identity("unix", uid=0, user="a")), _Conn(Identity("unix", uid=2, user="l"))
    for _ in range(3):
        _call(app, admin, "POST", "/containers/x/stop")
    assert calls.before == 3 and [r[0][0] for r in audit.records()] == ["start", "done"] * 3
    assert audit.queue.starts == 3
    statuses = [_call(app, limited, "GET", "/_ping")[0] for _ in range(4)]
    assert calls.before == 7 and statuses[:2] == [200, 200] and 429 in statuses[2:]  # counted every time


def test_a_refused_read_is_recorded_with_its_rule_and_never_planned(tmp_path: Path) -> None:
    app, _, _, calls, _ = _app(tmp_path)
    reader = _Conn(Identity("unix", uid=1, user="r"))
    for _ in range(2):
        status, rec = _call(app, reader, "POST", "/containers/x/stop")
        assert status == 403 and rec[0][6][:2] == ("deny", "readers")
    assert calls.before == 2


def test_a_reloaded_policy_drops_the_plans_made_under_the_old_one(tmp_path: Path) -> None:
    app, stage, _, calls, holder = _app(tmp_path)
    bob = _Conn(Identity("unix", uid=1, user="b"))
    assert _call(app, bob, "GET", "/_ping")[1][0][6] == ("allow", "readers", "")
    _call(app, bob, "GET", "/_ping")
    assert calls.before == 1
    readers_deny_all = POLICY.replace('allow = ["read-only"]\n[[rules]]\nname = "limited"',
                                      'allow = []\n[[rules]]\nname = "limited"')  # fmt: skip
    (tmp_path / "policy.toml").write_text(readers_deny_all)
    sec = Security(None, holder, stage)
    assert asyncio.run(sec._reload(holder)) is True
    assert bob.plans is None
    status, rec = _call(app, bob, "GET", "/_ping")
    assert (status, rec[0][6][:2], calls.before) == (403, ("deny", "readers"), 2)


def test_an_invalid_policy_on_reload_keeps_the_old_one_and_its_plans(tmp_path: Path) -> None:
    app, stage, _, calls, holder = _app(tmp_path)
    bob = _Conn(Identity("unix", uid=1, user="b"))
    _call(app, bob, "GET", "/_ping")
    (tmp_path / "policy.toml").write_text("this is not toml [")
    old = holder.policy
    assert asyncio.run(Security(None, holder, stage)._reload(holder)) is False
    assert holder.policy is old
    assert _call(app, bob, "GET", "/_ping")[0] == 200 and calls.before == 1


@pytest.mark.parametrize("who", [0, 1])
def test_an_error_in_a_planned_read_is_still_recorded(tmp_path: Path, who: int) -> None:
    app, _, _, _, _ = _app(tmp_path)
    conn = _Conn(Identity("unix", uid=who, user="u"))

    def boom(req: Request) -> Response:
        raise RuntimeError("handler broke")

    app.router.add("GET", "/boom", "SystemInfo", boom)
    statuses = [_call(app, conn, "GET", "/boom")[1][2] for _ in range(2)]
    assert statuses == [500, 500]


def test_without_the_audit_log_a_write_is_still_decided_on_its_body_every_time(tmp_path: Path) -> None:
    """Only reads get plans: a plan skips authorization, and a create is decided on its body."""
    path = tmp_path / "policy.toml"
    path.write_text(POLICY + '[[rules]]\nname = "builders"\nmatch.uids = [3]\nallow = ["ContainerCreate"]\n'
                    "[rules.create]\nallow_privileged = false\n")  # fmt: skip
    stage = SecurityStage(AuthzMiddleware(PolicyHolder(path), None), None)  # type: ignore[arg-type]
    router = Router()
    router.add("POST", "/containers/create", "ContainerCreate", lambda req: Response(201, b"{}"))
    app = App(router, stage)
    builder = _Conn(Identity("unix", uid=3, user="b"))
    statuses = []
    for body in (b'{"Image": "busybox"}', b'{"Image": "busybox", "HostConfig": {"Privileged": true}}'):
        req = Request(builder, "POST", "/containers/create", {"content-type": "application/json"})  # type: ignore[arg-type]
        req.body = body
        app.route(req)
        resp = app.handle(req)
        assert isinstance(resp, Response)
        statuses.append(resp.status)
    assert statuses == [201, 403] and builder.plans is None


def test_plans_are_bounded_per_connection_in_number_and_target_length(tmp_path: Path) -> None:
    """A plan holds its request target: long targets get none (still authorized and recorded every
    time), and a connection's plans are dropped when there are too many."""
    app, _, _, calls, _ = _app(tmp_path)
    conn = _Conn(Identity("unix", uid=1, user="r"))
    long_id = "x" * 2000
    for _ in range(2):
        status, rec = _call(app, conn, "GET", f"/containers/{long_id}/json")
        assert status == 200 and rec[0][5] == long_id
    assert calls.before == 2 and conn.plans is None
    for i in range(256):
        _call(app, conn, "GET", f"/containers/c{i}/json")
    assert conn.plans is not None and len(conn.plans) == 256
    _call(app, conn, "GET", "/containers/one-more/json")
    assert list(conn.plans) == ["/containers/one-more/json"]
    _call(app, conn, "GET", "/containers/one-more/json")
    assert calls.before == 2 + 257  # the last read went by its plan
