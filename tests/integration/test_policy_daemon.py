# ruff: noqa: E501
"""A real daemon with --policy and --audit-log, driven by the real docker CLI as real unprivileged users."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DOCKER_CLI, Daemon

pytestmark = [pytest.mark.root, pytest.mark.slow]

SOCKET_GROUP = "dytest"
RUNUSER = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
SYS_PYTHON = "/usr/bin/python3"  # the venv lives under /root, which the test users cannot read
MONITOR, CI, OTHER = "dymon", "dyci", "dyother"

POLICY = """
mode = "{mode}"
[[rules]]
name = "admins"
match.uids = [0]
allow = ["*"]

[[rules]]
name = "monitoring"
match.groups = ["dymonitor"]
allow = ["read-only"{extra}]

[[rules]]
name = "ci"
match.users = ["dyci", "dyother"]
allow = ["read-only", "container-data", "ContainerCreate", "ContainerStart", "ContainerStop", "ContainerWait",
         "ContainerDelete", "ContainerKill"]
own_objects_only = true
[rules.create]
bind_roots = ["{bind_root}"]
images = ["busybox"]

[[rules]]
name = "limited"
match.users = ["dylimited"]
allow = ["read-only"]
limits = {{ requests_per_second = 5, burst = 5 }}
"""


def _ensure_user(name: str, groups: list[str], made: list[tuple[str, str]]) -> None:
    """Create the user and groups that do not exist yet, noting them in ``made`` (to remove afterwards)."""
    for g in [SOCKET_GROUP, *groups]:
        try:
            grp.getgrnam(g)
        except KeyError:
            subprocess.run(["groupadd", g], check=True)
            made.append(("groupdel", g))
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name], check=True)
        made.append(("userdel", name))
    subprocess.run(["usermod", "-a", "-G", ",".join([SOCKET_GROUP, *groups]), name], check=True)


@pytest.fixture(scope="module")
def users() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create users")
    made: list[tuple[str, str]] = []
    try:
        _ensure_user(MONITOR, ["dymonitor"], made)
        _ensure_user(CI, [], made)
        _ensure_user(OTHER, [], made)
        _ensure_user("dylimited", [], made)
        yield
    finally:
        for command, name in sorted(made, key=lambda m: m[0] != "userdel"):  # users before their groups
            subprocess.run([command, name], check=False, capture_output=True)


class PolicyDaemon(Daemon):
    """A daemon with a policy file and an audit log, reachable by the test users."""

    def __init__(self, base: Path, seed_root: Path, mode: str = "enforce", audit: bool = True) -> None:
        self.policy = base / "policy.toml"
        self.audit = base / "audit" / "audit.log"
        self.bind_root = base / "ci-data"
        self.bind_root.mkdir()
        self.write_policy(mode)
        super().__init__(base, seed_root, ["-G", SOCKET_GROUP, "--policy", str(self.policy),
                                           "--audit-log", str(self.audit) if audit else "off"])  # fmt: skip
        os.chmod(base, 0o755)

    def write_policy(self, mode: str = "enforce", extra: str = "") -> None:
        self.policy.write_text(POLICY.format(mode=mode, extra=extra, bind_root=self.bind_root))

    def as_user(self, user: str, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The real docker CLI run by ``user`` (runuser: a real process with that uid)."""
        home = Path(tempfile.mkdtemp(prefix=f"home-{user}-"))
        shutil.chown(home, user)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "DOCKER_HOST": self.host,
               "DOCKER_CLI_HINTS": "false"}  # fmt: skip
        proc = subprocess.run([RUNUSER, "-u", user, "--", DOCKER_CLI, *args], capture_output=True, text=True,
                              env=env, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
        if check:
            assert proc.returncode == 0, f"docker {args} as {user}: {proc.stderr}"
        return proc

    def records(self) -> list[dict[str, object]]:
        """The audit records once the log has settled: reads' records reach the writer process in batches
        (``audit_pipe.BATCH_DELAY``), so wait until two reads a batch apart agree."""
        before, deadline = None, time.monotonic() + 10
        while True:
            time.sleep(0.15)
            text = self.audit.read_text()
            if text == before or time.monotonic() > deadline:
                return [json.loads(line) for line in text.splitlines()]
            before = text


def _base() -> Path:
    return Path(tempfile.mkdtemp(prefix="dy-", dir="/tmp"))


@pytest.fixture(scope="module")
def pd(users: None, seed_root: Path) -> Iterator[PolicyDaemon]:
    d = PolicyDaemon(_base(), seed_root)
    d.start()
    yield d
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


def test_monitoring_user_can_list_but_not_create_or_read_container_data(pd: PolicyDaemon) -> None:
    cid = pd.cli("create", "busybox", "true").stdout.decode().strip()
    listing = pd.as_user(MONITOR, "ps", "-a", "-q", "--no-trunc", check=True)
    assert cid in listing.stdout
    pd.as_user(MONITOR, "inspect", cid, check=True)
    create = pd.as_user(MONITOR, "create", "busybox", "true")
    assert create.returncode != 0
    assert (
        "authorization denied by rule 'monitoring': operation ContainerCreate is not allowed" in create.stderr
    )
    logs = pd.as_user(MONITOR, "logs", cid)
    assert logs.returncode != 0 and "operation ContainerLogs is not allowed" in logs.stderr
    rm = pd.as_user(MONITOR, "rm", cid)
    assert rm.returncode != 0 and "authorization denied" in rm.stderr
    pd.cli("rm", cid)


def test_ci_user_cannot_run_privileged_or_bind_etc(pd: PolicyDaemon) -> None:
    priv = pd.as_user(CI, "run", "--rm", "--privileged", "busybox", "true")
    assert priv.returncode != 0 and "privileged containers are not allowed" in priv.stderr
    etc = pd.as_user(CI, "run", "--rm", "-v", "/etc:/x", "busybox", "true")
    assert etc.returncode != 0 and "bind mount of /etc is not allowed" in etc.stderr
    host = pd.as_user(CI, "run", "--rm", "--network", "host", "busybox", "true")
    assert host.returncode != 0 and "NetworkMode" in host.stderr
    other_image = pd.as_user(CI, "create", "hello-world")
    assert other_image.returncode != 0 and "not from an allowed repository" in other_image.stderr
    ok = pd.as_user(CI, "run", "--rm", "-v", f"{pd.bind_root}:/d", "busybox", "echo", "hello-ci", check=True)
    assert "hello-ci" in ok.stdout


def test_ci_user_sees_only_its_own_containers(pd: PolicyDaemon) -> None:
    admin_cid = pd.cli("create", "--name", "admins-box", "busybox", "true").stdout.decode().strip()
    mine = pd.as_user(CI, "create", "busybox", "true", check=True).stdout.strip()
    theirs = pd.as_user(OTHER, "create", "busybox", "true", check=True).stdout.strip()
    listing = pd.as_user(CI, "ps", "-a", "-q", "--no-trunc", check=True).stdout.split()
    assert mine in listing and admin_cid not in listing and theirs not in listing
    for ref in (admin_cid, "admins-box", theirs[:12]):
        inspect = pd.as_user(CI, "inspect", "--type", "container", ref)
        assert inspect.returncode != 0 and f"No such container: {ref}" in inspect.stderr
        assert pd.as_user(CI, "rm", "-f", ref).returncode == 0  # the CLI ignores "no such container" with -f
        rm = pd.as_user(CI, "rm", ref)
        assert rm.returncode != 0 and f"No such container: {ref}" in rm.stderr
        assert pd.as_user(CI, "start", ref).returncode != 0
    assert {admin_cid, theirs} <= {c["Id"] for c in pd.api.containers(all=True)}  # nothing was removed
    labels = pd.api.inspect_container(mine)["Config"]["Labels"]
    assert labels["dockyard.owner"] == f"uid:{pwd.getpwnam(CI).pw_uid}"
    assert mine in [c["Id"] for c in pd.api.containers(all=True)]  # admins see everything
    pd.as_user(CI, "rm", mine, check=True)
    pd.cli("rm", admin_cid, theirs)


def test_ci_user_cannot_reach_another_users_exec_by_id(pd: PolicyDaemon) -> None:
    theirs = pd.as_user(OTHER, "run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    mine = pd.as_user(CI, "run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    try:
        their_exec = pd.api.exec_create(theirs, ["true"])["Id"]  # made by an admin, in OTHER's container
        my_exec = pd.api.exec_create(mine, ["true"])["Id"]
        # ExecInspect and ExecStart name the exec, not the container: the owner check follows the exec
        # to its container (the docker CLI has no command for these by id, so the API is called as CI).
        for exec_id, visible in ((my_exec, True), (their_exec, False)):
            proc = subprocess.run(
                [RUNUSER, "-u", CI, "--", "curl", "-s", "--unix-socket", str(pd.socket),
                 f"http://d/v1.47/exec/{exec_id}/json"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if visible:
                assert json.loads(proc.stdout)["ContainerID"] == mine
            else:
                assert json.loads(proc.stdout) == {"message": f"No such exec instance: {exec_id}"}
    finally:
        pd.cli("rm", "-f", theirs, mine)


def test_rate_limit_answers_429(pd: PolicyDaemon) -> None:
    script = (
        "import http.client,socket,sys\n"
        "class C(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock=socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])\n"
        "c=C('d'); codes=[]\n"
        "for _ in range(20):\n"
        "    c.request('GET','/containers/json'); r=c.getresponse(); body=r.read(); codes.append(r.status)\n"
        "print(codes.count(200), codes.count(429), body.decode() if r.status==429 else '')\n"
    )
    out = subprocess.run([RUNUSER, "-u", "dylimited", "--", SYS_PYTHON, "-c", script, str(pd.socket)],
                         capture_output=True, text=True, timeout=30, check=True).stdout.split(maxsplit=2)  # fmt: skip
    assert 5 <= int(out[0]) < 20 and int(out[1]) > 0
    assert "rate limit exceeded for uid:" in out[2]


def test_audit_log_names_each_caller_and_verifies(pd: PolicyDaemon) -> None:
    pd.as_user(MONITOR, "ps", check=True)
    pd.as_user(MONITOR, "create", "busybox", "true")
    uid = pwd.getpwnam(MONITOR).pw_uid
    mine = [r for r in pd.records() if (r["caller"] or {}).get("uid") == uid]  # type: ignore[union-attr]
    ops = {(r["operation"], r.get("decision"), r.get("status")) for r in mine}
    assert ("ContainerList", "allow", 200) in ops and ("ContainerCreate", "deny", 403) in ops
    assert all(isinstance(r["caller"]["pid"], int) and r["caller"]["pid"] > 0 for r in mine)  # type: ignore[index]
    denied = next(r for r in mine if r["operation"] == "ContainerCreate")
    assert denied["rule"] == "monitoring" and denied["method"] == "POST"
    cli = [sys.executable, "-m", "dockyard.cli.main", "audit"]
    ok = subprocess.run([*cli, "verify", str(pd.audit)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    tail = subprocess.run([*cli, "tail", "-n", "1000", "--caller", str(uid), str(pd.audit)],
                          capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert tail and all(f"uid={uid} " in line for line in tail)
    copy = pd.base / "copy.log"
    for how in ("edit", "delete", "reorder"):
        lines = pd.audit.read_text().splitlines(keepends=True)
        if how == "edit":
            lines[2] = lines[2].replace('"GET"', '"PUT"').replace('"POST"', '"PUT"')
        elif how == "delete":
            del lines[2]
        else:
            lines[2], lines[3] = lines[3], lines[2]
        copy.write_text("".join(lines))
        bad = subprocess.run([*cli, "verify", str(copy)], capture_output=True, text=True)
        line = 4 if how == "edit" else 3
        assert bad.returncode == 1 and f"{copy}:{line}:" in bad.stderr, (how, bad.stderr)


def test_mutating_calls_write_their_record_first(pd: PolicyDaemon) -> None:
    cid = pd.as_user(CI, "create", "busybox", "true", check=True).stdout.strip()
    recs = [r for r in pd.records() if r["operation"] == "ContainerCreate" and r.get("status") == 201]
    start = [r for r in pd.records() if r["operation"] == "ContainerCreate" and r["phase"] == "start"]
    assert recs and start and start[-1]["request_id"] == recs[-1]["request_id"]
    pd.as_user(CI, "rm", cid, check=True)


def test_sighup_reloads_and_a_bad_file_keeps_the_old_policy(pd: PolicyDaemon) -> None:
    assert pd.proc is not None
    pd.write_policy(extra=', "ContainerCreate"')
    pd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while pd.as_user(MONITOR, "create", "busybox", "true").returncode != 0:
        assert time.monotonic() < deadline, "the new policy was not loaded"
        time.sleep(0.1)
    pd.policy.write_text('mode = "enforce"\n[[rules]]\nname = "x"\nmatch.uids = [0]\nallow = ["Nope"]\n')
    pd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "policy reload failed" not in pd.log_path.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "unknown operation 'Nope'" in pd.log_path.read_text()
    assert pd.as_user(MONITOR, "create", "busybox", "true").returncode == 0  # old (widened) policy in force
    pd.write_policy()
    pd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while pd.as_user(MONITOR, "create", "busybox", "true").returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pd.cli("container", "prune", "-f")


def _raw(sock_path: Path, request: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    s.sendall(request)
    out = b""
    s.settimeout(30)
    while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_hostile_bodies_over_the_wire(pd: PolicyDaemon) -> None:
    """As the CI user: chunked encoding and a large body with the bad field at the very end."""
    body = b'{"Image":"busybox","HostConfig":{"Privileged":false,"Privileged":true}}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (1, body[i : i + 1]) for i in range(len(body))) + b"0\r\n\r\n"
    big = b'{"Image":"busybox","Env":["X=' + b"a" * (8 << 20) + b'"],"HostConfig":{"PidMode":"host"}}'
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read())\n"
        "out=b''\n"
        "while b'}' not in out:\n"
        "    c=s.recv(65536)\n"
        "    if not c: break\n"
        "    out+=c\n"
        "sys.stdout.buffer.write(out)\n"
    )
    requests = [
        b"POST /v1.47/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
        b"POST /v1.47/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(big) + big,
    ]
    for req, reason in zip(requests, ["privileged containers", "PidMode"], strict=True):
        out = subprocess.run([RUNUSER, "-u", CI, "--", SYS_PYTHON, "-c", script, str(pd.socket)],
                             input=req, capture_output=True, timeout=60, check=True).stdout  # fmt: skip
        assert out.startswith(b"HTTP/1.1 403"), out[:200]
        assert reason.encode() in out


def test_audit_only_mode_allows_and_logs_would_be_denials(users: None, seed_root: Path) -> None:
    d = PolicyDaemon(_base(), seed_root, mode="audit-only")
    d.start()
    try:
        cid = d.as_user(MONITOR, "create", "busybox", "true", check=True).stdout.strip()
        rec = next(r for r in d.records() if r["operation"] == "ContainerCreate" and r["phase"] == "done")
        assert rec["decision"] == "audit-deny" and rec["rule"] == "monitoring" and rec["status"] == 201
        assert "would deny" in d.log_path.read_text()
        d.cli("rm", cid)
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)


UNCONFINED_POLICY = """
[[rules]]
name = "admins"
match.uids = [0]
allow = ["*"]

[[rules]]
name = "builders"
match.users = ["dyci"]
allow = ["read-only", "ContainerCreate", "ContainerDelete"]
[rules.create]
images = ["busybox"]
"""


def test_constraints_hold_on_every_create_without_audit_log(users: None, seed_root: Path) -> None:
    """With ``--audit-log off`` and a rule that constrains creates but neither confines nor limits the
    caller, the caller's plain reads are answered from per-connection plans. An allowed create must not
    leave one behind: on the same keep-alive connection, a privileged create or a bind of /etc that
    follows allowed creates is still checked and refused."""
    d = PolicyDaemon(_base(), seed_root, audit=False)
    d.policy.write_text(UNCONFINED_POLICY)
    d.start()
    script = (
        "import http.client,json,socket,sys\n"
        "class C(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock=socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])\n"
        "c=C('d'); out=[]\n"
        "def call(method, path, body=None):\n"
        "    c.request(method, path, body=json.dumps(body) if body else None,\n"
        "              headers={'Content-Type': 'application/json'})\n"
        "    r=c.getresponse(); out.append([r.status, json.loads(r.read() or b'null')])\n"
        "for _ in range(2): call('GET','/containers/json?all=1')\n"
        "for _ in range(2): call('POST','/containers/create',{'Image':'busybox','Cmd':['true']})\n"
        "call('POST','/containers/create',{'Image':'busybox','HostConfig':{'Privileged':True}})\n"
        "call('POST','/containers/create',{'Image':'busybox','HostConfig':{'Binds':['/etc:/x']}})\n"
        "call('GET','/containers/json?all=1')\n"
        "print(json.dumps(out))\n"
    )
    try:
        run = subprocess.run([RUNUSER, "-u", CI, "--", SYS_PYTHON, "-c", script, str(d.socket)],
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        (_, listed), _, (s1, c1), (s2, c2), (s3, priv), (s4, etc), (_, after) = json.loads(run.stdout)
        assert (s1, s2) == (201, 201) and listed == []
        assert s3 == 403 and "rule 'builders'" in priv["message"]
        assert "privileged containers are not allowed" in priv["message"]
        assert s4 == 403 and "bind mount of /etc is not allowed" in etc["message"]
        assert sorted(c["Id"] for c in after) == sorted([c1["Id"], c2["Id"]])
        assert not d.audit.exists() and not (d.data_root / "audit.log").exists()
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)
