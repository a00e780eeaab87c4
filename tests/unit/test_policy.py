"""Policy loading, validation and decisions (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.security.identity import Identity
from dockyard.security.operations import SPEC_OPERATIONS
from dockyard.security.policy import (
    CONTAINER_DATA,
    PolicyError,
    load_policy,
    parse_policy,
    read_only_operations,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policies" / "team.toml"
ALICE = Identity("unix", uid=1000, gid=1000, pid=4242, user="alice", group="alice", groups=("monitoring",))
CI = Identity("unix", uid=1001, gid=1001, pid=1, user="ci", group="ci")
ROOT = Identity("unix", uid=0, gid=0, pid=1, user="root", group="root")
TLS = Identity("tls", cert_cn="builder", cert_fingerprint="AB:CD:EF")
NOBODY = Identity("unix", uid=4000, gid=4000, pid=1, user="nobody2")


def policy(rules: list[dict[str, object]], **top: object) -> object:
    return parse_policy({"rules": rules, **top}, "test.toml")


def test_example_policy_loads() -> None:
    p = load_policy(EXAMPLE)
    assert [r.name for r in p.rules] == ["admins", "monitoring", "ci"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"mode": "loose"}, "mode must be one of"),
        ({"colour": 1}, "unknown key(s) colour"),
        (
            {"rules": [{"name": "a", "match": {"uids": [1]}, "allow": ["ContainerCreat"]}]},
            "unknown operation",
        ),
        ({"rules": [{"name": "a", "match": {"uids": [1]}, "alow": []}]}, "unknown key(s) alow"),
        ({"rules": [{"name": "a", "match": {"uid": [1]}}]}, "unknown key(s) uid"),
        ({"rules": [{"name": "a", "match": {}}]}, "matches nobody"),
        ({"rules": [{"name": "a"}]}, "match is required"),
        ({"rules": [{"match": {"uids": [1]}}]}, "name is required"),
        ({"rules": [{"name": "a", "match": {"uids": ["1"]}}]}, "uids must be an array of integers"),
        (
            {"rules": [{"name": "a", "match": {"uids": [1]}, "create": {"privileged": False}}]},
            "unknown key(s)",
        ),
        ({"rules": [{"name": "a", "match": {"uids": [1]}, "create": {"bind_roots": ["srv"]}}]}, "absolute"),
        ({"rules": [{"name": "a", "match": {"uids": [1]}, "limits": {"burst": -1}}]}, "burst must be"),
        ({"rules": [{"name": "a", "match": {"uids": [1]}}, {"name": "a", "match": {"uids": [2]}}]}, "twice"),
    ],
)
def test_invalid_policies_are_refused_with_a_clear_message(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=None) as info:
        parse_policy(doc, "test.toml")
    assert message in info.value.message
    assert info.value.message.startswith("test.toml")


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("mode = \n")
    with pytest.raises(PolicyError, match=r"p\.toml"):
        load_policy(bad)


def test_read_only_excludes_container_data_and_writes() -> None:
    ro = read_only_operations(SPEC_OPERATIONS)
    assert {"ContainerList", "ContainerInspect", "ImageList", "SystemPing", "SystemPingHead"} <= ro
    assert not ro & CONTAINER_DATA
    assert {"ContainerArchive", "ContainerExport", "ContainerLogs", "ContainerAttach"} <= CONTAINER_DATA
    assert "ContainerCreate" not in ro and "ContainerDelete" not in ro


def test_router_operations_are_all_known() -> None:
    from dockyard.api.app import Router
    from dockyard.api.routers import containers, images, system

    router = Router()
    system.register(router, None)  # type: ignore[arg-type]
    containers.register(router, _Stub(), None)  # type: ignore[arg-type]
    images.register(router, None)  # type: ignore[arg-type]
    for route in router.routes():
        assert SPEC_OPERATIONS.get(route.operation) in (route.method, "GET"), route.operation


class _Stub:
    lifecycle = None


def test_first_matching_rule_decides_and_default_denies() -> None:
    p = load_policy(EXAMPLE)
    assert p.decide(ALICE, "ContainerList").allowed
    d = p.decide(ALICE, "ContainerCreate", {"Image": "busybox"})
    assert not d.allowed and d.rule == "monitoring" and "ContainerCreate is not allowed" in d.reason
    assert not p.decide(ALICE, "ContainerLogs").allowed
    assert not p.decide(ALICE, "ContainerExport").allowed
    assert p.decide(ROOT, "ContainerCreate", {"HostConfig": {"Privileged": True}}).allowed
    d = p.decide(NOBODY, "SystemPing")
    assert not d.allowed and d.rule == "<default>" and "no rule matches uid=4000" in d.reason


def test_ci_rule_confines_to_own_objects() -> None:
    p = load_policy(EXAMPLE)
    d = p.decide(CI, "ContainerCreate", {"Image": "busybox"})
    assert d.allowed and d.owner == "uid:1001"
    assert p.decide(CI, "ContainerLogs").allowed
    assert not p.decide(CI, "ContainerExport").allowed  # deny wins over the container-data group


def test_tls_identity_matches_cn_and_fingerprint() -> None:
    p = policy(
        [
            {"name": "by-fp", "match": {"cert_fingerprints": ["abcdef"]}, "allow": ["SystemInfo"]},
            {"name": "by-cn", "match": {"cert_cns": ["builder"]}, "allow": ["*"]},
        ]
    )
    d = p.decide(TLS, "SystemInfo")  # type: ignore[attr-defined]
    assert d.allowed and d.rule == "by-fp"
    d = p.decide(Identity("tls", cert_cn="builder"), "ContainerCreate", {})  # type: ignore[attr-defined]
    assert d.allowed and d.rule == "by-cn"


def test_audit_only_allows_but_records_the_denial() -> None:
    p = policy([{"name": "mon", "match": {"uids": [1000]}, "allow": ["read-only"]}], mode="audit-only")
    d = p.decide(ALICE, "ContainerCreate", {})  # type: ignore[attr-defined]
    assert d.allowed and not d.would_allow and d.verdict == "audit-deny"
    assert p.decide(ALICE, "ContainerList").verdict == "allow"  # type: ignore[attr-defined]


def test_image_pull_is_checked_against_allowed_repositories() -> None:
    p = load_policy(EXAMPLE)
    assert not p.decide(CI, "ImageCreate", None, {"fromImage": ["alpine"]}).allowed
    d = p.decide(CI, "ContainerCreate", {"Image": "docker.io/library/busybox:1.36"})
    assert d.allowed


def test_cached_decisions_never_cross_identities() -> None:
    """Body-less decisions are cached per identity object: a cached allow must not leak to another caller,
    not even one whose fields are equal, and a reloaded policy starts over."""
    p = load_policy(EXAMPLE)
    for _ in range(3):  # the second and third calls are answered from the cache
        assert p.decide(ROOT, "ContainerList").allowed
        assert not p.decide(NOBODY, "ContainerList").allowed
    twin = Identity("unix", uid=4000, gid=4000, pid=1, user="nobody2")  # equal to NOBODY, another object
    assert not p.decide(twin, "ContainerList").allowed
    assert p.decide(ROOT, "ContainerList") is p.decide(ROOT, "ContainerList")
    stricter = parse_policy({"mode": "enforce", "default": "deny"}, "<reloaded>")
    assert not stricter.decide(ROOT, "ContainerList").allowed
