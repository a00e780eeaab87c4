"""Container inspect: the document's shape against the v1.47 spec, State fields and time formats."""

from __future__ import annotations

import re
import time
from datetime import datetime

import docker.errors
import pytest

from tests.conftest import Daemon

RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
ZERO_TIME = "0001-01-01T00:00:00Z"
INSPECT_KEYS = {
    "AppArmorProfile", "Args", "Config", "Created", "Driver", "ExecIDs", "GraphDriver", "HostConfig",
    "HostnamePath", "HostsPath", "Id", "Image", "LogPath", "MountLabel", "Mounts", "Name", "NetworkSettings",
    "Path", "Platform", "ProcessLabel", "ResolvConfPath", "RestartCount", "State",
}  # fmt: skip
STATE_KEYS = {
    "Dead", "Error", "ExitCode", "FinishedAt", "OOMKilled", "Paused", "Pid", "Restarting", "Running",
    "StartedAt", "Status",
}  # fmt: skip


def parse_time(text: str) -> float:
    """RFC3339 with up to nanoseconds → epoch seconds (microsecond precision is enough here)."""
    assert RFC3339NANO.match(text), text
    base, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))


def wait_status(daemon: Daemon, ref: str, status: str, timeout: float = 10) -> dict[str, object]:
    """Poll inspect until State.Status is ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        state = daemon.api.inspect_container(ref)["State"]
        if state["Status"] == status or time.monotonic() > deadline:
            assert state["Status"] == status, state
            return dict(state)
        time.sleep(0.02)


def test_inspect_keys_match_spec(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox")
    info = daemon.api.inspect_container(unique_name)
    assert set(info) == INSPECT_KEYS
    assert set(info["State"]) == STATE_KEYS
    assert info["Name"] == "/" + unique_name
    assert re.fullmatch(r"[0-9a-f]{64}", info["Id"])
    assert info["Image"].startswith("sha256:")
    assert info["HostConfig"]["LogConfig"]["Type"]
    assert info["Config"]["Image"] == "busybox"
    for key in ("AttachStdin", "Tty", "OpenStdin", "Env", "Cmd", "Labels", "WorkingDir", "Hostname", "User"):
        assert key in info["Config"], key


def test_inspect_size(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "--name", unique_name, "busybox", "sh", "-c", "head -c 100000 /dev/zero > /big")
    info = daemon.api.inspect_container(unique_name, size=True) if _sdk_has_size(daemon) else None
    raw = daemon.api.get(daemon.api._url("/containers/{0}/json", unique_name), params={"size": 1}).json()
    assert raw["SizeRw"] >= 100000
    assert raw["SizeRootFs"] >= raw["SizeRw"]
    assert info is None or info["SizeRw"] == raw["SizeRw"]


def _sdk_has_size(daemon: Daemon) -> bool:
    import inspect as pyinspect

    return "size" in pyinspect.signature(daemon.api.inspect_container).parameters


def test_times_in_gos_rfc3339nano(daemon: Daemon, unique_name: str) -> None:
    """Go's RFC3339Nano drops trailing zeros of the fraction (and the dot when it is zero)."""
    daemon.cli("run", "--name", unique_name, "busybox", "true")
    info = daemon.api.inspect_container(unique_name)
    for stamp in (info["Created"], info["State"]["StartedAt"], info["State"]["FinishedAt"]):
        assert RFC3339NANO.match(stamp), stamp
        assert not re.search(r"\.\d*0Z$", stamp), stamp


def test_created_state(daemon: Daemon, unique_name: str) -> None:
    before = time.time()
    daemon.cli("create", "--name", unique_name, "busybox")
    info = daemon.api.inspect_container(unique_name)
    state = info["State"]
    assert state["Status"] == "created"
    assert state["Running"] is False
    assert state["Pid"] == 0
    assert state["StartedAt"] == ZERO_TIME
    assert state["FinishedAt"] == ZERO_TIME
    assert before - 1 <= parse_time(info["Created"]) <= time.time() + 1


def test_running_then_exited_state(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "-i", "--name", unique_name, "busybox", "sh", "-c", "read x; exit 3")
    running = daemon.api.inspect_container(unique_name)["State"]
    assert running["Status"] == "running"
    assert running["Running"] is True
    assert running["Pid"] > 0
    assert running["FinishedAt"] == ZERO_TIME
    started = parse_time(running["StartedAt"])
    assert abs(started - time.time()) < 30
    sock = daemon.api.attach_socket(unique_name, params={"stdin": 1, "stream": 1})
    try:
        sock._sock.sendall(b"go\n")
        state = wait_status(daemon, unique_name, "exited")
    finally:
        sock._sock.close()
        sock.close()
    assert state["ExitCode"] == 3
    assert state["Running"] is False
    assert state["Pid"] == 0
    assert parse_time(str(state["FinishedAt"])) >= started
    assert state["StartedAt"] == running["StartedAt"]


def test_inspect_format_exit_code(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "--name", unique_name, "busybox", "sh", "-c", "exit 5", check=False)
    out = daemon.cli("inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", unique_name).stdout
    assert out == b"5 exited\n"


def test_inspect_by_prefix_and_missing(daemon: Daemon, unique_name: str) -> None:
    cid = daemon.cli("create", "--name", unique_name, "busybox").stdout.decode().strip()
    assert daemon.api.inspect_container(cid[:10])["Id"] == cid
    with pytest.raises(docker.errors.NotFound) as err:
        daemon.api.inspect_container("nosuchcontainer-" + unique_name)
    assert f"No such container: nosuchcontainer-{unique_name}" in str(err.value.explanation)
    proc = daemon.cli("inspect", "nosuch-" + unique_name, check=False)
    assert proc.returncode == 1
    assert b"No such object" in proc.stderr or b"No such container" in proc.stderr


def test_inspect_host_config_defaults(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox")
    hc = daemon.api.inspect_container(unique_name)["HostConfig"]
    assert hc["NetworkMode"] in ("default", "bridge")
    assert hc["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert hc["Memory"] == 0
    assert hc["AutoRemove"] is False
    assert "/proc/kcore" in hc["MaskedPaths"]
    assert "/proc/sys" in hc["ReadonlyPaths"]
    endpoint = next(iter(daemon.api.inspect_container(unique_name)["NetworkSettings"]["Networks"].values()))
    assert "DNSNames" in endpoint


def test_privileged_has_no_masked_paths(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "--privileged", "busybox")
    hc = daemon.api.inspect_container(unique_name)["HostConfig"]
    assert hc["Privileged"] is True
    assert not hc["MaskedPaths"]
