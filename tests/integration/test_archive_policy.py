"""Policy over the archive endpoints, with real users running the real docker CLI: reading a container's
files (``docker cp`` out, ``docker export``) is container data, which a read-only rule does not grant;
owner isolation hides others' containers from the archive calls as from every other container call."""

from __future__ import annotations

import io
import pwd
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_policy_daemon import CI, MONITOR, OTHER, RUNUSER, PolicyDaemon, _base
from tests.integration.test_policy_daemon import users as users  # the module-scoped fixture
from tests.tar_helpers import f, make_tar

pytestmark = [pytest.mark.root, pytest.mark.slow]


class ArchivePolicyDaemon(PolicyDaemon):
    """test_policy_daemon's policy, with ``ci`` also allowed to write into (its own) containers."""

    def write_policy(self, mode: str = "enforce", extra: str = "") -> None:
        super().write_policy(mode, extra)
        text = self.policy.read_text()
        self.policy.write_text(text.replace('"ContainerKill"]', '"ContainerKill", "PutContainerArchive"]', 1))


@pytest.fixture(scope="module")
def pd(users: None, seed_root: Path) -> Iterator[PolicyDaemon]:
    d = ArchivePolicyDaemon(_base(), seed_root)
    assert "PutContainerArchive" in d.policy.read_text()
    d.start()
    yield d
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


def _put_as(pd: PolicyDaemon, user: str, ref: str, data: bytes) -> tuple[int, str]:
    """``PUT /containers/{ref}/archive?path=/tmp`` as ``user`` (curl: the CLI hides HEAD errors' bodies)."""
    proc = subprocess.run(
        [RUNUSER, "-u", user, "--", "curl", "-s", "-o", "-", "-w", "%{http_code}", "-X", "PUT",
         "--unix-socket", str(pd.socket), "--data-binary", "@-", f"http://d/v1.47/containers/{ref}/archive?path=/tmp"],
        input=data, capture_output=True, timeout=30,
    )  # fmt: skip
    return int(proc.stdout[-3:]), proc.stdout[:-3].decode()


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_read_only_user_lists_but_cannot_copy_out_or_export(pd: PolicyDaemon) -> None:
    cid = pd.cli("create", "busybox", "true").stdout.decode().strip()
    try:
        assert cid in pd.as_user(MONITOR, "ps", "-a", "-q", "--no-trunc", check=True).stdout
        cp = pd.as_user(MONITOR, "cp", f"{cid}:/etc/passwd", "-")
        assert cp.returncode != 0
        assert (
            "authorization denied by rule 'monitoring': operation ContainerArchive is not allowed"
            in cp.stderr
        )
        assert cp.stdout == ""
        export = pd.as_user(MONITOR, "export", cid)
        assert export.returncode != 0
        assert (
            "authorization denied by rule 'monitoring': operation ContainerExport is not allowed"
            in export.stderr
        )
        uid = pwd.getpwnam(MONITOR).pw_uid
        mine = [r for r in pd.records() if (r.get("caller") or {}).get("uid") == uid]  # type: ignore[union-attr]
        denied = {(r["operation"], r.get("decision"), r.get("status")) for r in mine}
        assert ("ContainerArchive", "deny", 403) in denied and ("ContainerExport", "deny", 403) in denied
        assert ("ContainerList", "allow", 200) in denied
        assert all(r.get("rule") == "monitoring" for r in mine if r.get("decision") == "deny")
    finally:
        pd.cli("rm", cid)


def test_owner_isolation_covers_copy_and_export(pd: PolicyDaemon) -> None:
    mine = pd.as_user(CI, "create", "busybox", "true", check=True).stdout.strip()
    theirs = pd.as_user(OTHER, "create", "busybox", "true", check=True).stdout.strip()
    admins = pd.cli("create", "busybox", "true").stdout.decode().strip()
    try:
        own = pd.as_user(CI, "cp", f"{mine}:/etc/passwd", "-", check=True)
        assert own.stdout.startswith("passwd")  # the tar's first header names the file
        assert "etc/passwd" in _tar_names(pd.cli("export", mine).stdout)
        for ref in (theirs, admins, theirs[:12]):
            cp = pd.as_user(CI, "cp", f"{ref}:/etc/passwd", "-")
            assert cp.returncode != 0 and f"No such container: {ref}" in cp.stderr, cp.stderr
            export = pd.as_user(CI, "export", ref)
            assert export.returncode != 0 and f"No such container: {ref}" in export.stderr
        # The admin reaches everyone's containers.
        for ref in (mine, theirs):
            assert _tar_names(pd.cli("cp", f"{ref}:/etc/passwd", "-").stdout) == ["passwd"]
    finally:
        pd.cli("rm", mine, theirs, admins)


def test_writing_into_a_container_needs_its_own_grant(pd: PolicyDaemon) -> None:
    cid = pd.cli("create", "busybox", "true").stdout.decode().strip()
    try:
        status, body = _put_as(pd, MONITOR, cid, make_tar(f("x.txt")))
        assert status == 403
        assert (
            "authorization denied by rule 'monitoring': operation PutContainerArchive is not allowed" in body
        )
        uid = pwd.getpwnam(MONITOR).pw_uid
        ops = {
            (r["operation"], r.get("decision"))
            for r in pd.records()
            if (r.get("caller") or {}).get("uid") == uid
        }  # type: ignore[union-attr]
        assert ("PutContainerArchive", "deny") in ops
    finally:
        pd.cli("rm", cid)


def test_a_confined_user_copies_into_its_own_container(pd: PolicyDaemon) -> None:
    mine = pd.as_user(CI, "create", "busybox", "true", check=True).stdout.strip()
    try:
        pd.as_user(CI, "cp", "/etc/hostname", f"{mine}:/tmp/copied", check=True)
        assert _tar_names(pd.cli("cp", f"{mine}:/tmp/copied", "-").stdout) == ["copied"]
    finally:
        pd.cli("rm", mine)


def test_a_confined_user_cannot_write_into_another_users_container(pd: PolicyDaemon) -> None:
    theirs = pd.as_user(OTHER, "create", "busybox", "true", check=True).stdout.strip()
    try:
        status, body = _put_as(pd, CI, theirs, make_tar(f("planted.txt", b"from ci")))
        planted = pd.cli("cp", f"{theirs}:/tmp/planted.txt", "-", check=False).returncode == 0
        assert not planted, "ci wrote into another user's container"
        assert status == 404 and f"No such container: {theirs}" in body
    finally:
        pd.cli("rm", theirs)
