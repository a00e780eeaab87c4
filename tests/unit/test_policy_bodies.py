"""Hostile create bodies through the authorization stage (the same JSON parse the engine uses)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dockyard.api.app import Router
from dockyard.api.messages import Request
from dockyard.api.middleware.authz import AuthzMiddleware, PolicyHolder
from dockyard.api.params import json_body
from dockyard.errors import Conflict, DockyardError, Forbidden, InvalidParameter, NotFound
from dockyard.security.identity import Identity

CI = Identity("unix", uid=1001, gid=1001, pid=7, user="ci", group="ci")


class _Conn:
    def __init__(self, who: Identity) -> None:
        self.identity = who


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    os.symlink("/etc", allowed / "escape")
    return allowed


@pytest.fixture
def authz(tmp_path: Path, roots: Path) -> AuthzMiddleware:
    policy = tmp_path / "p.toml"
    policy.write_text(f"""
[[rules]]
name = "ci"
match.users = ["ci"]
allow = ["*"]
own_objects_only = true
[rules.create]
cap_add = ["CHOWN"]
bind_roots = ["{roots}"]
images = ["busybox"]
""")
    return AuthzMiddleware(PolicyHolder(policy), _Owned())


class _Owned:
    """``OwnedObjects`` over fixed tables (a fake of ``engine.owned.OwnedView``)."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, str]] = {
            "mine": {"dockyard.owner": "uid:1001"}, "theirs": {"dockyard.owner": "uid:0"}, "bare": {}
        }  # fmt: skip
        self.exec_of = {"exec-mine": "mine", "exec-theirs": "theirs"}

    def container(self, ref: str, owner: str) -> str:
        if self.labels.get(ref, {}).get("dockyard.owner") != owner:
            raise NotFound(f"No such container: {ref}")
        return ref

    def exec(self, ref: str, owner: str) -> None:
        if ref in self.exec_of and self.labels[self.exec_of[ref]].get("dockyard.owner") != owner:
            raise NotFound(f"No such exec instance: {ref}")

    def image(self, ref: str, owner: str) -> str:
        if "theirs" in ref:
            raise NotFound(f"No such image: {ref}")
        return ref

    def name_holder(self, name: str) -> dict[str, str] | None:
        return self.labels.get(name.lstrip("/"))


def _route(op: str) -> Any:
    router = Router()
    method, path = {"ContainerCreate": ("POST", "/containers/create"),
                    "ContainerList": ("GET", "/containers/json"),
                    "ContainerInspect": ("GET", "/containers/{id}/json"),
                    "ExecInspect": ("GET", "/exec/{id}/json"),
                    "ExecStart": ("POST", "/exec/{id}/start"),
                    "PutContainerArchive": ("PUT", "/containers/{id}/archive"),
                    "ContainerArchiveInfo": ("HEAD", "/containers/{id}/archive"),
                    "ContainerRename": ("POST", "/containers/{id}/rename"),
                    "ImageInspect": ("GET", "/images/{name:path}/json"),
                    "ImageDelete": ("DELETE", "/images/{name:path}"),
                    "ImageCommit": ("POST", "/commit"),
                    "ImageGetAll": ("GET", "/images/get"),
                    "SystemEvents": ("GET", "/events")}[op]  # fmt: skip
    router.add(method, path, op, lambda r: None)
    return router.routes()[0]


def _request(body: bytes, op: str = "ContainerCreate", path: str = "/containers/create") -> Request:
    req = Request(_Conn(CI), "POST", path, {})  # type: ignore[arg-type]
    req.body = body
    return req


def _run(authz: AuthzMiddleware, req: Request, op: str = "ContainerCreate") -> None:
    assert authz.before(req, _route(op)) is None  # authorization never has to wait


def _hc(**hc: Any) -> bytes:
    return json.dumps({"Image": "busybox", "HostConfig": hc}).encode()


DENIED: list[tuple[str, bytes, str]] = [
    ("privileged", _hc(Privileged=True), "privileged"),
    ("privileged as string", _hc(Privileged="true"), "privileged"),
    ("privileged as 1", _hc(Privileged=1), "privileged"),
    (
        "duplicate key, last wins",
        b'{"Image":"busybox","HostConfig":{"Privileged":false,"Privileged":true}}',
        "privileged",
    ),
    (
        "duplicate HostConfig",
        b'{"Image":"busybox","HostConfig":{},"HostConfig":{"Privileged":true}}',
        "privileged",
    ),
    ("lower-case key", b'{"Image":"busybox","HostConfig":{"privileged":true}}', "privileged"),
    (
        "utf-16 body",
        json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode("utf-16"),
        "privileged",
    ),
    ("unicode escape in key", b'{"Image":"busybox","HostConfig":{"Privil\\u0065ged":true}}', "privileged"),
    ("bind /etc", _hc(Binds=["/etc:/x"]), "bind mount of /etc"),
    ("bind /etc read-only", _hc(Binds=["/etc:/x:ro"]), "bind mount of /etc"),
    ("bind via dot-dot", _hc(Binds=["{root}/../../etc:/x"]), "bind mount of"),
    ("symlinked escape", _hc(Binds=["{root}/escape:/x"]), "bind mount of"),
    ("mount bind", _hc(Mounts=[{"Type": "bind", "Source": "/etc", "Target": "/x"}]), "bind mount of /etc"),
    ("mount BIND", _hc(Mounts=[{"Type": "BIND", "Source": "/", "Target": "/x"}]), "bind mount of /"),
    (
        "mount type twice",
        b'{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"volume","type":"bind",'
        b'"Source":"/etc","Target":"/x"}]}}',
        "exactly one Type",
    ),
    ("mount npipe", _hc(Mounts=[{"Type": "npipe", "Source": "/x", "Target": "/x"}]), "not allowed"),
    ("network host", _hc(NetworkMode="host"), "NetworkMode"),
    ("pid host", _hc(PidMode="host"), "PidMode"),
    ("ipc host", _hc(IpcMode="host"), "IpcMode"),
    ("uts host", _hc(UTSMode="host"), "UTSMode"),
    ("userns host", _hc(UsernsMode="host"), "UsernsMode"),
    ("pid of another container", _hc(PidMode="container:theirs"), "PidMode"),
    ("cap ALL", _hc(CapAdd=["ALL"]), "capability ALL"),
    ("cap as string", _hc(CapAdd="SYS_ADMIN"), "capability SYS_ADMIN"),
    ("cap with prefix", _hc(CapAdd=["CAP_SYS_ADMIN"]), "capability CAP_SYS_ADMIN"),
    ("devices", _hc(Devices=[{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]), "Devices"),
    ("device requests", _hc(DeviceRequests=[{"Count": -1}]), "DeviceRequests"),
    ("seccomp unconfined", _hc(SecurityOpt=["seccomp=unconfined"]), "security option"),
    ("volumes from", _hc(VolumesFrom=["theirs"]), "VolumesFrom"),
    ("image not allowed", json.dumps({"Image": "alpine"}).encode(), "allowed repository"),
    ("image by id", json.dumps({"Image": "sha256:" + "a" * 64}).encode(), "named by repository"),
    ("no image", b"{}", "an image is required"),
    ("HostConfig not an object", b'{"Image":"busybox","HostConfig":[]}', "HostConfig must be an object"),
    ("array body", b"[]", "JSON object"),
    ("string body", b'"x"', "JSON object"),
    ("null body", b"null", "JSON object"),
]


@pytest.mark.parametrize(("case", "body", "reason"), DENIED, ids=[c[0] for c in DENIED])
def test_hostile_create_bodies_are_denied(
    authz: AuthzMiddleware, roots: Path, case: str, body: bytes, reason: str
) -> None:
    req = _request(body.replace(b"{root}", str(roots).encode()))
    with pytest.raises(Forbidden) as info:
        _run(authz, req)
    assert info.value.message.startswith("authorization denied by rule 'ci': ")
    assert reason in info.value.message


@pytest.mark.parametrize(
    "body",
    [b'{"Image":"busybox"', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
    ids=["cut", "bytes", "deep"],
)
def test_unparseable_bodies_are_bad_requests(authz: AuthzMiddleware, body: bytes) -> None:
    with pytest.raises(InvalidParameter, match="invalid JSON"):
        _run(authz, _request(body))


ALLOWED = [
    _hc(Privileged=False, CapAdd=["chown"], NetworkMode="bridge", PidMode=""),
    _hc(Binds=["{root}/data:/d:ro", "named:/v"]),
    _hc(
        Mounts=[{"Type": "volume", "Target": "/v"}, {"Type": "bind", "Source": "{root}/data", "Target": "/d"}]
    ),
    json.dumps({"Image": "docker.io/library/busybox:latest", "Labels": {"dockyard.owner": "uid:0"}}).encode(),
]


@pytest.mark.parametrize("body", ALLOWED)
def test_allowed_bodies_pass_and_the_engine_sees_the_checked_object(
    authz: AuthzMiddleware, roots: Path, body: bytes
) -> None:
    req = _request(body.replace(b"{root}", str(roots).encode()))
    _run(authz, req)
    seen = json_body(req)  # what the create handler will parse
    assert seen["Labels"]["dockyard.owner"] == "uid:1001"  # stamped, and a forged owner overwritten
    assert seen.get("HostConfig") == json.loads(body.replace(b"{root}", str(roots).encode())).get(
        "HostConfig"
    )


def test_duplicate_keys_collapse_before_the_engine_parses(authz: AuthzMiddleware) -> None:
    req = _request(
        b'{"Image":"alpine","Image":"busybox","HostConfig":{"Privileged":true,"Privileged":false}}'
    )
    _run(authz, req)
    assert req.body.count(b"Image") == 1 and req.body.count(b"Privileged") == 1
    assert json_body(req)["HostConfig"] == {"Privileged": False}


def _check_lookup(
    authz: AuthzMiddleware, op: str, method: str, path: str, ref: str, absent: str | None
) -> None:
    """Authorize ``op`` on ``path`` naming ``ref``: it passes, or raises NotFound matching ``absent``."""
    req = Request(_Conn(CI), method, path, {})  # type: ignore[arg-type]
    req.params = {"id": ref}
    if absent is None:
        _run(authz, req, op)
        return
    with pytest.raises(NotFound, match=absent):
        _run(authz, req, op)


@pytest.mark.parametrize("op", ["ContainerInspect", "PutContainerArchive", "ContainerArchiveInfo"])
def test_others_containers_look_absent(authz: AuthzMiddleware, op: str) -> None:
    """Every route under a container's URL, whatever its operation is called."""
    for ref, absent in (("mine", False), ("theirs", True), ("bare", True), ("missing", True)):
        message = f"No such container: {ref}" if absent else None
        _check_lookup(authz, op, "GET", f"/containers/{ref}/json", ref, message)


def test_others_exec_instances_look_absent(authz: AuthzMiddleware) -> None:
    for ref, absent in (("exec-mine", False), ("exec-theirs", True), ("exec-missing", False)):
        message = f"No such exec instance: {ref}" if absent else None
        for op, method, path in (("ExecInspect", "GET", "json"), ("ExecStart", "POST", "start")):
            _check_lookup(authz, op, method, f"/exec/{ref}/{path}", ref, message)


def test_lists_are_filtered_to_the_owner(authz: AuthzMiddleware) -> None:
    req = Request(_Conn(CI), "GET", '/containers/json?all=1&filters={"label":["x=1"]}', {})  # type: ignore[arg-type]
    _run(authz, req, "ContainerList")
    assert req.arg("all") == "1"
    assert json.loads(req.arg("filters") or "") == {"label": ["x=1", "dockyard.owner=uid:1001"]}


def test_events_are_filtered_to_the_owner(authz: AuthzMiddleware) -> None:
    req = Request(_Conn(CI), "GET", '/events?since=1&filters={"type":["container"]}', {})  # type: ignore[arg-type]
    _run(authz, req, "SystemEvents")
    assert req.arg("since") == "1"
    assert json.loads(req.arg("filters") or "") == {
        "type": ["container"],
        "label": ["dockyard.owner=uid:1001"],
    }


def test_bad_filters_still_fail(authz: AuthzMiddleware) -> None:
    req = Request(_Conn(CI), "GET", "/containers/json?filters=nope", {})  # type: ignore[arg-type]
    with pytest.raises(DockyardError, match="invalid filter"):
        _run(authz, req, "ContainerList")


TAKEN = (
    'Conflict. The container name "/theirs" is already in use. '
    "You have to remove (or rename) that container to be able to reuse that name."
)


def test_a_name_taken_by_another_owner_is_refused_without_its_id(authz: AuthzMiddleware) -> None:
    for name in ("theirs", "/theirs"):
        req = Request(_Conn(CI), "POST", f"/containers/create?name={name}", {})  # type: ignore[arg-type]
        req.body = b'{"Image":"busybox"}'
        with pytest.raises(Conflict) as info:
            _run(authz, req)
        assert info.value.message == TAKEN
    for name in ("mine", "free", "bad name!"):  # its own holder, a free name, the engine's 400
        req = Request(_Conn(CI), "POST", f"/containers/create?name={name}", {})  # type: ignore[arg-type]
        req.body = b'{"Image":"busybox"}'
        _run(authz, req)
    req = Request(_Conn(CI), "POST", "/containers/mine/rename?name=theirs", {})  # type: ignore[arg-type]
    req.params = {"id": "mine"}
    with pytest.raises(Conflict) as info:
        _run(authz, req, "ContainerRename")
    assert info.value.message == TAKEN


def test_others_images_look_absent(authz: AuthzMiddleware) -> None:
    for op in ("ImageInspect", "ImageDelete"):
        req = Request(_Conn(CI), "GET", "/images/theirs-img/json", {})  # type: ignore[arg-type]
        req.params = {"name": "theirs-img"}
        with pytest.raises(NotFound, match="No such image: theirs-img"):
            _run(authz, req, op)
    req = _request(b'{"Image":"busybox:theirs"}')  # a tag of an allowed repository another owner made
    with pytest.raises(NotFound, match="No such image: busybox:theirs"):
        _run(authz, req)


def test_list_pivots_resolve_among_the_callers_containers(authz: AuthzMiddleware) -> None:
    for key in ("before", "since"):
        path = f'/containers/json?filters={{"{key}":["theirs"]}}'
        with pytest.raises(NotFound, match=r"^No such container: theirs$"):  # as a missing one: no probing
            _run(authz, Request(_Conn(CI), "GET", path, {}), "ContainerList")  # type: ignore[arg-type]
        req = Request(_Conn(CI), "GET", f'/containers/json?filters={{"{key}":["mine"]}}', {})  # type: ignore[arg-type]
        _run(authz, req, "ContainerList")
        assert json.loads(req.arg("filters") or "")[key] == ["mine"]


@pytest.mark.parametrize(
    ("op", "path", "absent"),
    [
        ("ImageCommit", "/commit?container=theirs&repo=x", "No such container: theirs"),
        ("ImageGetAll", "/images/get?names=busybox&names=busybox:theirs", "No such image: busybox:theirs"),
    ],
)
def test_objects_named_in_the_query_are_confined_too(
    authz: AuthzMiddleware, op: str, path: str, absent: str
) -> None:
    with pytest.raises(NotFound, match=f"^{absent}$"):
        _run(authz, Request(_Conn(CI), "GET", path, {}), op)  # type: ignore[arg-type]
    mine = path.replace("theirs", "mine")
    req = Request(_Conn(CI), "GET", mine, {})  # type: ignore[arg-type]
    _run(authz, req, op)
    assert req.query == Request(_Conn(CI), "GET", mine, {}).query  # type: ignore[arg-type]
