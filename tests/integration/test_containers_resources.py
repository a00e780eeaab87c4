"""Resource limits seen in the container's cgroup and in inspect; network modes none and host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.root

CGROUP = Path("/sys/fs/cgroup")
V1 = (CGROUP / "memory").is_dir()


def cat_in_container(daemon: Daemon, *args: str) -> str:
    """Run a container with ``args`` (options, then image and command) and return its stdout."""
    return daemon.cli("run", "--rm", *args).stdout.decode()


def test_memory_limit(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "--memory", "64m", "busybox", "sleep", "60")
    info = daemon.api.inspect_container(unique_name)
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    cid = info["Id"]
    if V1:
        host = (CGROUP / "memory" / "dockyard" / cid / "memory.limit_in_bytes").read_text()
        inside = daemon.cli("exec", unique_name, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                            check=False)  # fmt: skip
        assert int(host) == 64 * 1024 * 1024
        if inside.returncode == 0:
            assert int(inside.stdout) == 64 * 1024 * 1024
    else:
        host = (CGROUP / "dockyard" / cid / "memory.max").read_text()
        assert int(host) == 64 * 1024 * 1024
    daemon.api.remove_container(cid, force=True)


def test_memory_limit_seen_inside(daemon: Daemon) -> None:
    path = "/sys/fs/cgroup/memory/memory.limit_in_bytes" if V1 else "/sys/fs/cgroup/memory.max"
    assert int(cat_in_container(daemon, "--memory", "64m", "busybox", "cat", path)) == 64 * 1024 * 1024


def test_cpus(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "--cpus", "0.5", "busybox", "sleep", "60")
    info = daemon.api.inspect_container(unique_name)
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    cid = info["Id"]
    if V1:
        cpu = CGROUP / "cpu" / "dockyard" / cid
        quota = int((cpu / "cpu.cfs_quota_us").read_text())
        period = int((cpu / "cpu.cfs_period_us").read_text())
    else:
        quota_s, period_s = (CGROUP / "dockyard" / cid / "cpu.max").read_text().split()
        quota, period = int(quota_s), int(period_s)
    assert quota / period == pytest.approx(0.5)
    daemon.api.remove_container(cid, force=True)


def test_cpus_seen_inside(daemon: Daemon) -> None:
    if not V1:
        pytest.skip("cgroup v1 layout")
    files = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
    out = cat_in_container(daemon, "--cpus", "0.5", "busybox", "sh", "-c", "cat " + files)
    quota, period = (int(x) for x in out.split())
    assert quota / period == pytest.approx(0.5)


def test_pids_limit(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "--pids-limit", "50", "busybox", "sleep", "60")
    info = daemon.api.inspect_container(unique_name)
    assert info["HostConfig"]["PidsLimit"] == 50
    cid = info["Id"]
    pids = CGROUP / "pids" / "dockyard" / cid / "pids.max" if V1 else CGROUP / "dockyard" / cid / "pids.max"
    assert pids.read_text().strip() == "50"
    path = "/sys/fs/cgroup/pids/pids.max" if V1 else "/sys/fs/cgroup/pids.max"
    assert cat_in_container(daemon, "--pids-limit", "50", "busybox", "cat", path).strip() == "50"
    daemon.api.remove_container(cid, force=True)


def test_no_limits_by_default(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("create", "--name", unique_name, "busybox")
    hc = daemon.api.inspect_container(unique_name)["HostConfig"]
    assert hc["Memory"] == 0
    assert hc["NanoCpus"] == 0
    assert hc["PidsLimit"] in (None, 0)


def test_memory_too_small_is_rejected(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "--memory", "1m", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b"Minimum memory limit allowed is 6MB" in proc.stderr


def test_too_many_cpus_is_rejected(daemon: Daemon) -> None:
    n = os.cpu_count() or 1
    proc = daemon.cli("run", "--rm", "--cpus", str(n + 1), "busybox", "true", check=False)
    assert proc.returncode == 125
    assert (
        f"range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available".encode() in proc.stderr
    )


def test_network_none_has_only_loopback(daemon: Daemon, unique_name: str) -> None:
    out = cat_in_container(daemon, "--network", "none", "busybox", "ls", "/sys/class/net")
    assert out.split() == ["lo"]
    daemon.cli("create", "--name", unique_name, "--network", "none", "busybox")
    info = daemon.api.inspect_container(unique_name)
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert list(info["NetworkSettings"]["Networks"]) == ["none"]


def test_network_host_sees_host_interfaces(daemon: Daemon) -> None:
    host_ifaces = set(os.listdir("/sys/class/net"))
    out = cat_in_container(daemon, "--network", "host", "busybox", "ls", "/sys/class/net")
    assert set(out.split()) == host_ifaces
    assert len(host_ifaces) > 1 or "lo" in host_ifaces
    hostname = cat_in_container(daemon, "--network", "host", "busybox", "hostname").strip()
    assert hostname == os.uname().nodename


def test_unknown_network_is_rejected(daemon: Daemon) -> None:
    proc = daemon.cli("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b"network nosuchnet not found" in proc.stderr
