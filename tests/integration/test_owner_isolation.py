# ruff: noqa: E501
"""Owner isolation (``own_objects_only``) over images and references, with real users running the real docker
CLI (and curl for calls the CLI cannot make) against a real daemon; the admin side uses the docker SDK.

Two confined users (``dyci``, ``dyother``) may do anything, but only to what they created: images they import or
tag are theirs (others get "No such image", exactly as for a missing one), shared images stay usable by everyone
and cannot be moved or removed by a confined user, references resolve within the caller's visible objects (an
id prefix another owner's container shares tells nothing), a taken name is refused without naming its holder,
and an image's labels cannot pre-assign the owner of containers made from it.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_policy_daemon import CI, OTHER, RUNUSER, PolicyDaemon, _base
from tests.integration.test_policy_daemon import users as users  # the module-scoped fixture
from tests.tar_helpers import f, make_tar

pytestmark = [pytest.mark.root, pytest.mark.slow]

POLICY = """
mode = "enforce"
[[rules]]
name = "admins"
match.uids = [0]
allow = ["*"]

[[rules]]
name = "confined"
match.users = ["dyci", "dyother"]
allow = ["*"]
own_objects_only = true
"""


class OwnerDaemon(PolicyDaemon):
    """Both test users confined to their own objects, with every operation allowed."""

    def write_policy(self, mode: str = "enforce", extra: str = "") -> None:
        self.policy.write_text(POLICY)


@pytest.fixture(scope="module")
def pd(users: None, seed_root: Path) -> Iterator[OwnerDaemon]:
    d = OwnerDaemon(_base(), seed_root)
    d.start()
    rootfs = d.base / "rootfs.tar"
    rootfs.write_bytes(make_tar(f("hello", b"hi\n")))
    os.chmod(rootfs, 0o644)
    yield d
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


def _owner(user: str) -> str:
    return f"uid:{pwd.getpwnam(user).pw_uid}"


def _fails(proc: subprocess.CompletedProcess[str], text: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert text in proc.stderr, proc.stderr


def _import(pd: OwnerDaemon, user: str, ref: str, *changes: str) -> str:
    args = [a for c in changes for a in ("-c", c)]
    out = pd.as_user(user, "import", *args, str(pd.base / "rootfs.tar"), ref, check=True).stdout
    return out.strip()


def _repo_tags(pd: OwnerDaemon, user: str) -> set[str]:
    out = pd.as_user(user, "images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout
    return set(out.split())


def _curl(pd: OwnerDaemon, user: str, method: str, path: str) -> tuple[int, str]:
    """One API call as ``user``; (status, body)."""
    verb = ["--head"] if method == "HEAD" else ["-X", method]
    proc = subprocess.run(
        [RUNUSER, "-u", user, "--", "curl", "-s", "-m", "15", "-o", "-", "-w", "%{http_code}", *verb,
         "--unix-socket", str(pd.socket), f"http://d/v1.47{path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return int(proc.stdout[-3:]), proc.stdout[:-3]


def test_an_imported_image_is_its_importers_alone(pd: OwnerDaemon) -> None:
    image_id = _import(pd, CI, "ci-img:1")
    assert {"ci-img:1", "busybox:latest"} <= _repo_tags(pd, CI)
    assert "ci-img:1" not in _repo_tags(pd, OTHER) and "busybox:latest" in _repo_tags(pd, OTHER)
    short = image_id.removeprefix("sha256:")[:12]
    for ref in ("ci-img:1", image_id, short):
        _fails(pd.as_user(OTHER, "image", "inspect", ref), f"No such image: {ref}")
    _fails(pd.as_user(OTHER, "rmi", "ci-img:1"), "No such image: ci-img:1")
    _fails(pd.as_user(OTHER, "tag", "ci-img:1", "stolen:1"), "No such image: ci-img:1")
    _fails(pd.as_user(OTHER, "create", "--pull", "never", "ci-img:1", "true"), "No such image: ci-img:1")
    # Exactly what a missing image answers, status and body.
    status, body = _curl(pd, OTHER, "GET", "/images/none-such:1/json")
    assert status == 404
    assert _curl(pd, OTHER, "GET", "/images/ci-img:1/json") == (404, body.replace("none-such", "ci-img"))
    # The admin sees it, and who owns it is metadata: the image config (and so the id) is untouched.
    admin_view = pd.client.images.get("ci-img:1")
    assert admin_view.id == image_id and "dockyard.owner" not in (
        admin_view.attrs["Config"].get("Labels") or {}
    )
    assert image_id in {i.id for i in pd.client.images.list()}
    # Its owner uses it as any image.
    cid = pd.as_user(CI, "create", "--pull", "never", "ci-img:1", "/hello", check=True).stdout.strip()
    pd.as_user(CI, "tag", "ci-img:1", "ci-img:2", check=True)
    assert "ci-img:2" not in _repo_tags(pd, OTHER)
    pd.as_user(CI, "rm", cid, check=True)
    pd.as_user(CI, "rmi", "ci-img:2", "ci-img:1", check=True)
    assert image_id not in {i.id for i in pd.client.images.list()}


def test_shared_images_stay_usable_but_cannot_be_moved_or_removed(pd: OwnerDaemon) -> None:
    seed = pd.client.images.get("busybox").id
    pd.as_user(CI, "tag", "busybox", "ci-box:1", check=True)  # its own tag of a shared image
    assert "ci-box:1" in _repo_tags(pd, CI) and "ci-box:1" not in _repo_tags(pd, OTHER)
    assert "busybox:latest" in _repo_tags(pd, OTHER)  # the image itself stays visible to everyone
    tags = pd.as_user(OTHER, "image", "inspect", "--format", "{{json .RepoTags}}", "busybox", check=True)
    assert json.loads(tags.stdout) == ["busybox:latest"]  # without the other user's tag of it
    assert "ci-box:1" in pd.client.images.get("busybox").tags  # which the admin sees
    _fails(pd.as_user(OTHER, "image", "inspect", "ci-box:1"), "No such image: ci-box:1")
    _fails(
        pd.as_user(OTHER, "tag", "busybox", "ci-box:1"),
        "cannot tag ci-box:1: it was not created by the caller",
    )
    _import(pd, CI, "ci-poison:1")
    _fails(pd.as_user(CI, "tag", "ci-poison:1", "busybox:latest"), "cannot tag busybox:latest")
    _fails(
        pd.as_user(CI, "import", str(pd.base / "rootfs.tar"), "busybox:latest"), "cannot tag busybox:latest"
    )
    _fails(pd.as_user(OTHER, "rmi", "busybox"), "cannot remove busybox: it was not created by the caller")
    _fails(pd.as_user(OTHER, "rmi", "-f", seed), "it was not created by the caller")
    assert pd.client.images.get("busybox").id == seed  # nobody swapped or removed the base image
    pd.as_user(OTHER, "image", "prune", "-a", "-f", check=True)
    assert "ci-poison:1" in _repo_tags(pd, CI)  # another user's prune leaves it alone
    cid = pd.as_user(OTHER, "create", "busybox", "true", check=True).stdout.strip()
    pd.as_user(OTHER, "rm", cid, check=True)
    pd.as_user(CI, "rmi", "ci-box:1", "ci-poison:1", check=True)
    assert pd.client.images.get("busybox").id == seed


def test_image_events_reach_their_owner_only(pd: OwnerDaemon) -> None:
    since = str(int(time.time()) - 1)
    image_id = _import(pd, CI, "ci-evt:1")
    pd.as_user(CI, "rmi", "ci-evt:1", check=True)
    until = str(int(time.time()) + 1)

    def seen(user: str) -> list[str]:
        out = pd.as_user(user, "events", "--since", since, "--until", until, "--filter", "type=image",
                         "--format", "{{.Action}} {{.Actor.ID}}", check=True).stdout  # fmt: skip
        return [line for line in out.splitlines() if image_id in line]

    assert [line.split()[0] for line in seen(CI)] == ["import", "untag", "delete"]
    assert seen(OTHER) == []


def _containers_until(pd: OwnerDaemon, mine: str, enough: Any) -> tuple[list[str], tuple[str, str]]:
    """Admin containers (nobody's, so invisible to the confined users) until ``enough(ids)`` finds prefixes."""
    made: list[str] = []
    for _ in range(200):
        made.append(pd.api.create_container("busybox", "true")["Id"])
        found = enough(made)
        if found:
            return made, found
    raise AssertionError("no prefixes found")


def _prefixes(mine: str, others: list[str]) -> tuple[str, str] | None:
    """(a prefix of ``mine`` that others share, a prefix only others share, by two or more)."""
    shared = next((mine[:n] for n in (1, 2) if any(o.startswith(mine[:n]) for o in others)), None)
    theirs = next((o[:n] for n in (1, 2) for o in others
                   if not mine.startswith(o[:n]) and sum(x.startswith(o[:n]) for x in others) >= 2), None)  # fmt: skip
    return (shared, theirs) if shared and theirs else None


def test_references_resolve_within_the_callers_containers(pd: OwnerDaemon) -> None:
    mine = pd.as_user(CI, "create", "busybox", "true", check=True).stdout.strip()
    made, (shared, theirs) = _containers_until(pd, mine, lambda ids: _prefixes(mine, ids))
    try:
        # Ambiguous over every container, unique among the caller's: it resolves, as if alone.
        inspect = pd.as_user(CI, "inspect", "--type", "container", "--format", "{{.Id}}", shared, check=True)
        assert inspect.stdout.strip() == mine
        status, _ = _curl(pd, CI, "GET", f"/containers/{shared}/json")
        assert status == 200
        # Ambiguous among others' only: exactly what a missing container answers, not "multiple IDs".
        status, body = _curl(pd, CI, "GET", f"/containers/{theirs}/json")
        assert (status, json.loads(body)) == (404, {"message": f"No such container: {theirs}"})
        _fails(pd.as_user(CI, "inspect", "--type", "container", theirs), f"No such container: {theirs}")
        admin = pd.cli("inspect", "--type", "container", theirs, check=False)
        assert b"multiple IDs found" in admin.stderr  # what the admin, who sees them all, is told
        # A list's before/since pivot is looked up among the caller's containers too: no probing by it.
        for key in ("before", "since"):
            _fails(
                pd.as_user(CI, "ps", "-a", "--filter", f"{key}={made[0]}"), f"No such container: {made[0]}"
            )
            listed = pd.as_user(CI, "ps", "-a", "-q", "--no-trunc", "--filter", f"{key}={shared}", check=True)
            assert mine not in listed.stdout.split()
    finally:
        pd.api.remove_container(mine)
        for cid in made:
            pd.api.remove_container(cid)


def test_a_taken_name_is_refused_without_naming_its_holder(pd: OwnerDaemon) -> None:
    name = f"taken-{os.urandom(3).hex()}"
    theirs = pd.as_user(OTHER, "create", "--name", name, "busybox", "true", check=True).stdout.strip()
    mine = pd.as_user(CI, "create", "busybox", "true", check=True).stdout.strip()
    try:
        expected = (f'Conflict. The container name "/{name}" is already in use. '
                    "You have to remove (or rename) that container to be able to reuse that name.")  # fmt: skip
        for args in (("create", "--name", name, "busybox", "true"), ("rename", mine, name)):
            proc = pd.as_user(CI, *args)
            _fails(proc, expected)
            assert theirs not in proc.stderr and theirs[:12] not in proc.stderr
        admin = pd.cli("create", "--name", name, "busybox", "true", check=False)
        # dockerd's own text for an admin, who sees every container
        assert f'is already in use by container "{theirs}"'.encode() in admin.stderr
        own = pd.as_user(CI, "create", "--name", name + "-mine", "busybox", "true", check=True).stdout.strip()
        again = pd.as_user(CI, "create", "--name", name + "-mine", "busybox", "true")
        _fails(again, own)  # its own container it may be told about
        pd.as_user(CI, "rm", own, check=True)
    finally:
        pd.cli("rm", "-f", theirs, mine)


def test_an_image_label_does_not_assign_the_owner(pd: OwnerDaemon) -> None:
    other = _owner(OTHER)
    pd.cli("import", "-c", f"LABEL dockyard.owner={other}", str(pd.base / "rootfs.tar"), "labelled:1")
    try:
        admins = pd.client.containers.create("labelled:1", "/hello").id
        by_ci = pd.as_user(CI, "create", "--pull", "never", "labelled:1", "/hello", check=True).stdout.strip()
        explicit = pd.client.containers.create("labelled:1", "/hello", labels={"dockyard.owner": other}).id
        assert "dockyard.owner" not in pd.api.inspect_container(admins)["Config"]["Labels"]
        assert pd.api.inspect_container(by_ci)["Config"]["Labels"]["dockyard.owner"] == _owner(CI)
        visible = set(pd.as_user(OTHER, "ps", "-a", "-q", "--no-trunc", check=True).stdout.split())
        assert admins not in visible and by_ci not in visible
        assert explicit in visible  # an unconfined caller's explicit label is an admin's choice
        _fails(pd.as_user(OTHER, "inspect", "--type", "container", admins), f"No such container: {admins}")
    finally:
        pd.cli("rm", "-f", admins, by_ci, explicit)
        pd.cli("rmi", "labelled:1")


def _real_routes() -> list[Any]:
    """The routes the daemon serves, from its own composition root (the services are never called)."""
    from dockyard.daemon import build_app

    class _Anything:
        def __getattr__(self, name: str) -> _Anything:
            return _Anything()

        def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
            return _Anything()

    return build_app(_Anything()).router.routes()  # type: ignore[arg-type]


def test_info_counts_only_what_the_caller_can_list(pd: OwnerDaemon) -> None:
    pd.as_user(CI, "create", "--pull", "never", "busybox", "true", check=True)
    pd.client.containers.create("busybox", "true")  # the admin's: nobody's, so not the confined users'

    def info(user: str) -> list[int]:
        out = pd.as_user(user, "info", "--format", "{{.Containers}} {{.ContainersRunning}} "
                         "{{.ContainersPaused}} {{.ContainersStopped}} {{.Images}}", check=True).stdout  # fmt: skip
        return [int(n) for n in out.split()]

    for user in (CI, OTHER):
        total, running, paused, stopped, images = info(user)
        assert total == len(pd.as_user(user, "ps", "-aq", check=True).stdout.split())
        assert running + paused + stopped == total
        assert images == len(set(pd.as_user(user, "images", "-q", check=True).stdout.split()))
    everything = pd.client.info()
    assert everything["Containers"] == len(pd.client.containers.list(all=True)) > info(CI)[0] >= 1


def test_every_route_under_anothers_object_answers_404(pd: OwnerDaemon) -> None:
    routes = _real_routes()
    assert any(r.operation == "ContainerLogs" for r in routes)
    theirs = pd.as_user(OTHER, "run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
    their_exec = pd.api.exec_create(theirs, ["true"])["Id"]
    image_id = _import(pd, OTHER, "other-img:1")
    try:
        checked = set()
        for route in routes:
            for prefix, ref, text in (("/containers/{id}", theirs, f"No such container: {theirs}"),
                                      ("/exec/{id}", their_exec, f"No such exec instance: {their_exec}"),
                                      ("/images/{name:path}", "other-img:1", "No such image: other-img:1")):  # fmt: skip
                if not route.pattern.startswith(prefix):
                    continue
                path = (
                    route.pattern.replace("{id}", ref).replace("{name:path}", ref) + "?path=/&name=x&repo=x"
                )
                status, body = _curl(pd, CI, route.method, path)
                assert status == 404, (route.operation, status, body)
                if route.method != "HEAD":
                    assert json.loads(body) == {"message": text}, route.operation
                checked.add(route.operation)
        assert {"ContainerLogs", "ContainerAttach", "ContainerWait", "ContainerExec", "ContainerArchive",
                "ContainerExport", "ContainerTop", "ContainerDelete", "ExecStart", "ImageInspect",
                "ImageDelete", "ImageTag"} <= checked  # fmt: skip
        assert pd.api.inspect_container(theirs)["State"]["Running"]  # nothing reached it
        assert pd.client.images.get("other-img:1").id == image_id
    finally:
        pd.cli("rm", "-f", theirs)
        pd.cli("rmi", "other-img:1")
