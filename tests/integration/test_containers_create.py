"""Container create via the real docker CLI and the SDK: config merged with the image, validation texts."""

from __future__ import annotations

import json
import socket

import docker.errors
import pytest

from tests.conftest import Daemon


def run_out(daemon: Daemon, *args: str) -> str:
    """``docker run --rm ARGS`` and its stdout."""
    return daemon.cli("run", "--rm", *args).stdout.decode()


def raw_post(daemon: Daemon, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    """POST raw bytes over the unix socket (no client-side validation) and return status and JSON body."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(daemon.socket))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    s.sendall(head.encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head_b, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_b.split()[1])
    if b"chunked" in head_b.lower():
        payload = _unchunk(payload)
    return status, json.loads(payload) if payload.strip() else {}


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def test_image_cmd_is_default(daemon: Daemon) -> None:
    c = daemon.client.containers.create("busybox")
    try:
        assert c.attrs["Path"] == "sh"
        assert c.attrs["Config"]["Cmd"] == ["sh"]
    finally:
        c.remove()


def test_entrypoint_replaces_image_cmd(daemon: Daemon) -> None:
    assert run_out(daemon, "--entrypoint", "echo", "busybox") == "\n"
    assert run_out(daemon, "--entrypoint", "echo", "busybox", "a", "b") == "a b\n"


def test_entrypoint_inspect(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "--entrypoint", "/bin/echo", "busybox", "x")
    info = daemon.api.inspect_container(unique_name)
    assert info["Path"] == "/bin/echo"
    assert info["Args"] == ["x"]
    assert info["Config"]["Entrypoint"] == ["/bin/echo"]
    assert info["Config"]["Cmd"] == ["x"]


def test_env_added_and_image_env_kept(daemon: Daemon) -> None:
    out = run_out(daemon, "-e", "FOO=bar", "-e", "EMPTY=", "busybox", "env")
    lines = out.splitlines()
    assert "FOO=bar" in lines
    assert "EMPTY=" in lines
    assert any(line.startswith("PATH=") and "/bin" in line for line in lines)
    assert any(line.startswith("HOSTNAME=") for line in lines)


def test_env_overrides_image_env(daemon: Daemon) -> None:
    out = run_out(daemon, "-e", "PATH=/bin", "busybox", "sh", "-c", 'echo "$PATH"')
    assert out == "/bin\n"


def test_workdir(daemon: Daemon) -> None:
    assert run_out(daemon, "-w", "/tmp", "busybox", "pwd") == "/tmp\n"


def test_workdir_created_when_missing(daemon: Daemon) -> None:
    assert run_out(daemon, "-w", "/new/dir", "busybox", "pwd") == "/new/dir\n"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("1000", "1000 0"),
        ("nobody", "65534 65534"),
        ("1000:1000", "1000 1000"),
        ("daemon:mail", "1 8"),
        ("root", "0 0"),
    ],
)
def test_user(daemon: Daemon, user: str, expected: str) -> None:
    assert run_out(daemon, "-u", user, "busybox", "sh", "-c", 'echo "$(id -u) $(id -g)"') == expected + "\n"


def test_unknown_user_fails_with_dockers_text(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "-u", "nosuch", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b"unable to find user nosuch: no matching entries in passwd file" in proc.stderr


def test_unknown_group_fails(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "-u", "root:nosuch", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b"unable to find group nosuch: no matching entries in group file" in proc.stderr


def test_hostname(daemon: Daemon) -> None:
    assert run_out(daemon, "-h", "boxy", "busybox", "hostname") == "boxy\n"
    assert run_out(daemon, "-h", "boxy", "busybox", "cat", "/etc/hostname") == "boxy\n"


def test_default_hostname_is_short_id(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "--name", unique_name, "busybox", "hostname")
    info = daemon.api.inspect_container(unique_name)
    assert daemon.cli("logs", unique_name).stdout.decode() == info["Id"][:12] + "\n"
    assert info["Config"]["Hostname"] == info["Id"][:12]


def test_labels(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "-l", "a=1", "--label", "b", "busybox")
    labels = daemon.api.inspect_container(unique_name)["Config"]["Labels"]
    assert labels == {"a": "1", "b": ""}


def test_name_conflict(daemon: Daemon, unique_name: str) -> None:
    first = daemon.client.containers.create("busybox", name=unique_name)
    with pytest.raises(docker.errors.APIError) as err:
        daemon.client.containers.create("busybox", name=unique_name)
    assert err.value.status_code == 409
    assert err.value.explanation == (
        f'Conflict. The container name "/{unique_name}" is already in use by container "{first.id}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    proc = daemon.cli("create", "--name", unique_name, "busybox", check=False)
    assert proc.returncode != 0
    assert b"is already in use by container" in proc.stderr


@pytest.mark.parametrize("name", ["b@d", "-lead", "a", "sp ace", "x/y"])
def test_invalid_name(daemon: Daemon, name: str) -> None:
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.create_container("busybox", name=name)
    assert err.value.status_code == 400
    assert f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" in str(
        err.value.explanation
    )


def test_valid_names_with_dots_and_dashes(daemon: Daemon, unique_name: str) -> None:
    c = daemon.client.containers.create("busybox", name=unique_name + ".a_b-c")
    try:
        assert c.name == unique_name + ".a_b-c"
    finally:
        c.remove()


def test_unknown_image_is_image_not_found(daemon: Daemon) -> None:
    with pytest.raises(docker.errors.ImageNotFound) as err:
        daemon.client.containers.create("nosuchimage:v1")
    assert err.value.status_code == 404
    assert "No such image: nosuchimage:v1" in str(err.value.explanation)


def test_bad_json_body(daemon: Daemon) -> None:
    status, body = raw_post(daemon, "/containers/create", b'{"Image":"busybox",')
    assert status == 400
    assert body["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Image": "busybox", "Cmd": 5}, "Cmd"),
        ({"Image": "busybox", "Env": "A=1"}, "Env"),
        ({"Image": "busybox", "Tty": "yes"}, "Tty"),
        ({"Image": "busybox", "Labels": {"a": 1}}, "Labels"),
        ({"Image": "busybox", "HostConfig": {"Memory": "x"}}, "Memory"),
        ({"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": 1}}}, "RestartPolicy"),
        ({"Image": "busybox", "HostConfig": []}, "HostConfig"),
        ({"Image": 7}, "Image"),
    ],
)
def test_wrong_field_type_names_the_field(daemon: Daemon, body: dict[str, object], field: str) -> None:
    status, doc = raw_post(daemon, "/containers/create", json.dumps(body).encode())
    assert status == 400, doc
    assert field in str(doc["message"])


def test_body_not_object(daemon: Daemon) -> None:
    status, _ = raw_post(daemon, "/containers/create", b"[1,2]")
    assert status == 400


def test_missing_image(daemon: Daemon) -> None:
    status, doc = raw_post(daemon, "/containers/create", b'{"Cmd":["true"]}')
    assert status == 400
    assert "Image" in str(doc["message"])


def test_auto_remove(daemon: Daemon, unique_name: str) -> None:
    cid = daemon.cli("run", "-d", "--rm", "--name", unique_name, "busybox", "true").stdout.decode().strip()
    result = daemon.api.wait(cid, condition="removed", timeout=30)
    assert result["StatusCode"] == 0
    with pytest.raises(docker.errors.NotFound):
        daemon.api.inspect_container(cid)


def test_run_rm_returns_after_removal(daemon: Daemon, unique_name: str) -> None:
    out = daemon.cli("run", "--rm", "--name", unique_name, "busybox", "sh", "-c", "exit 4", check=False)
    assert out.returncode == 4
    assert unique_name not in [c.name for c in daemon.client.containers.list(all=True)]


def test_run_rm_failed_start_is_removed(daemon: Daemon, unique_name: str) -> None:
    proc = daemon.cli(
        "run", "--rm", "--name", unique_name, "busybox", "/nonexistent", check=False, timeout=20
    )
    assert proc.returncode == 127
    assert unique_name not in [c.name for c in daemon.client.containers.list(all=True)]


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        ({"Name": "foo"}, "invalid restart policy: unknown policy 'foo'; use one of 'no', 'always', "
         "'on-failure', or 'unless-stopped'"),
        ({"Name": "always", "MaximumRetryCount": 3},
         "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
        ({"Name": "always", "MaximumRetryCount": -1},
         "invalid restart policy: maximum retry count can only be used with 'on-failure' "
         "and cannot be negative"),
        ({"Name": "on-failure", "MaximumRetryCount": -1},
         "invalid restart policy: maximum retry count cannot be negative"),
    ],
)  # fmt: skip
def test_restart_policy_validation(daemon: Daemon, policy: dict[str, object], text: str) -> None:
    with pytest.raises(docker.errors.APIError) as err:
        hc = daemon.api.create_host_config(restart_policy=policy)
        daemon.api.create_container("busybox", host_config=hc)
    assert err.value.status_code == 400
    assert err.value.explanation == text


def test_restart_policy_accepted_and_shown(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "--restart", "on-failure:3", "busybox")
    policy = daemon.api.inspect_container(unique_name)["HostConfig"]["RestartPolicy"]
    assert policy == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_auto_remove_with_restart_policy_conflicts(daemon: Daemon) -> None:
    hc = daemon.api.create_host_config(auto_remove=True, restart_policy={"Name": "always"})
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.create_container("busybox", host_config=hc)
    assert err.value.status_code == 400
    assert "can't create 'AutoRemove' container with restart policy" in str(err.value.explanation)
