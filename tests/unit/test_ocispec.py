"""OCI spec generation: a golden default spec plus the rules layered on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.engine.ocispec import (
    ALL_CAPS,
    DEFAULT_CAPS,
    BindMount,
    Rlimit,
    SpecInput,
    build_spec,
    normalize_capabilities,
    resolve_user,
)
from dockyard.errors import InvalidParameter

# The whole default spec, as Docker's defaults give it; capabilities are checked separately.
GOLDEN_DEFAULT = json.loads(
    """
{
 "ociVersion": "1.0.2",
 "process": {
  "terminal": false,
  "user": {
   "uid": 0,
   "gid": 0
  },
  "args": [
   "sh"
  ],
  "env": [
   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
   "HOSTNAME=c1host"
  ],
  "cwd": "/",
  "capabilities": {
   "bounding": "DEFAULT_CAPS",
   "effective": "DEFAULT_CAPS",
   "permitted": "DEFAULT_CAPS"
  },
  "noNewPrivileges": false
 },
 "root": {
  "path": "/r",
  "readonly": false
 },
 "hostname": "c1host",
 "mounts": [
  {
   "destination": "/proc",
   "type": "proc",
   "source": "proc",
   "options": [
    "nosuid",
    "noexec",
    "nodev"
   ]
  },
  {
   "destination": "/dev",
   "type": "tmpfs",
   "source": "tmpfs",
   "options": [
    "nosuid",
    "strictatime",
    "mode=755",
    "size=65536k"
   ]
  },
  {
   "destination": "/dev/pts",
   "type": "devpts",
   "source": "devpts",
   "options": [
    "nosuid",
    "noexec",
    "newinstance",
    "ptmxmode=0666",
    "mode=0620",
    "gid=5"
   ]
  },
  {
   "destination": "/sys",
   "type": "sysfs",
   "source": "sysfs",
   "options": [
    "nosuid",
    "noexec",
    "nodev",
    "ro"
   ]
  },
  {
   "destination": "/sys/fs/cgroup",
   "type": "cgroup",
   "source": "cgroup",
   "options": [
    "nosuid",
    "noexec",
    "nodev",
    "relatime",
    "ro"
   ]
  },
  {
   "destination": "/dev/mqueue",
   "type": "mqueue",
   "source": "mqueue",
   "options": [
    "nosuid",
    "noexec",
    "nodev"
   ]
  },
  {
   "destination": "/dev/shm",
   "type": "tmpfs",
   "source": "shm",
   "options": [
    "nosuid",
    "noexec",
    "nodev",
    "mode=1777",
    "size=67108864"
   ]
  }
 ],
 "linux": {
  "cgroupsPath": "/dockyard/c1",
  "namespaces": [
   {
    "type": "pid"
   },
   {
    "type": "ipc"
   },
   {
    "type": "uts"
   },
   {
    "type": "mount"
   },
   {
    "type": "network"
   }
  ],
  "resources": {
   "devices": [
    {
     "allow": false,
     "access": "rwm"
    },
    {
     "allow": true,
     "type": "c",
     "major": 1,
     "access": "rwm",
     "minor": 3
    },
    {
     "allow": true,
     "type": "c",
     "major": 1,
     "access": "rwm",
     "minor": 5
    },
    {
     "allow": true,
     "type": "c",
     "major": 1,
     "access": "rwm",
     "minor": 7
    },
    {
     "allow": true,
     "type": "c",
     "major": 1,
     "access": "rwm",
     "minor": 8
    },
    {
     "allow": true,
     "type": "c",
     "major": 1,
     "access": "rwm",
     "minor": 9
    },
    {
     "allow": true,
     "type": "c",
     "major": 5,
     "access": "rwm",
     "minor": 0
    },
    {
     "allow": true,
     "type": "c",
     "major": 5,
     "access": "rwm",
     "minor": 1
    },
    {
     "allow": true,
     "type": "c",
     "major": 136,
     "access": "rwm"
    },
    {
     "allow": true,
     "type": "c",
     "major": 5,
     "access": "rwm",
     "minor": 2
    },
    {
     "allow": true,
     "type": "c",
     "major": 10,
     "access": "rwm",
     "minor": 200
    }
   ]
  },
  "sysctl": {
   "net.ipv4.ip_unprivileged_port_start": "0",
   "net.ipv4.ping_group_range": "0 2147483647"
  },
  "maskedPaths": [
   "/proc/asound",
   "/proc/acpi",
   "/proc/kcore",
   "/proc/keys",
   "/proc/latency_stats",
   "/proc/timer_list",
   "/proc/timer_stats",
   "/proc/sched_debug",
   "/proc/scsi",
   "/sys/firmware",
   "/sys/devices/virtual/powercap"
  ],
  "readonlyPaths": [
   "/proc/bus",
   "/proc/fs",
   "/proc/irq",
   "/proc/sys",
   "/proc/sysrq-trigger"
  ],
  "devices": [
   {
    "path": "/dev/null",
    "type": "c",
    "major": 1,
    "minor": 3,
    "fileMode": 438,
    "uid": 0,
    "gid": 0
   },
   {
    "path": "/dev/zero",
    "type": "c",
    "major": 1,
    "minor": 5,
    "fileMode": 438,
    "uid": 0,
    "gid": 0
   },
   {
    "path": "/dev/full",
    "type": "c",
    "major": 1,
    "minor": 7,
    "fileMode": 438,
    "uid": 0,
    "gid": 0
   },
   {
    "path": "/dev/random",
    "type": "c",
    "major": 1,
    "minor": 8,
    "fileMode": 438,
    "uid": 0,
    "gid": 0
   },
   {
    "path": "/dev/urandom",
    "type": "c",
    "major": 1,
    "minor": 9,
    "fileMode": 438,
    "uid": 0,
    "gid": 0
   },
   {
    "path": "/dev/tty",
    "type": "c",
    "major": 5,
    "minor": 0,
    "fileMode": 438,
    "uid": 0,
    "gid": 0
   }
  ]
 }
}
"""
)


def _spec(**kwargs: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"container_id": "c1", "rootfs": Path("/r"), "args": ["sh"]}
    return build_spec(SpecInput(**(base | kwargs)), hard_limit=lambda name: 1024)


def _mount(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in spec["mounts"] if m["destination"] == destination]
    assert len(found) == 1, found
    return found[0]


def test_default_spec_matches_golden() -> None:
    spec = _spec(hostname="c1host")
    caps = spec["process"].pop("capabilities")
    assert caps == {
        "bounding": list(DEFAULT_CAPS),
        "effective": list(DEFAULT_CAPS),
        "permitted": list(DEFAULT_CAPS),
    }
    golden = json.loads(json.dumps(GOLDEN_DEFAULT))
    golden["process"].pop("capabilities")
    assert spec == golden


def test_env_gets_tty_term_and_keeps_image_path() -> None:
    env = _spec(env=["PATH=/x", "A=1"], tty=True, hostname="h")["process"]["env"]
    assert env == ["HOSTNAME=h", "TERM=xterm", "PATH=/x", "A=1"]


def test_host_network_has_no_netns_and_no_sysctls() -> None:
    spec = _spec(network_mode="host")
    assert {"type": "network"} not in spec["linux"]["namespaces"]
    assert "sysctl" not in spec["linux"]


def test_joined_network_namespace() -> None:
    spec = _spec(network_mode="bridge", network_ns_path="/run/netns/x")
    assert {"type": "network", "path": "/run/netns/x"} in spec["linux"]["namespaces"]


def test_resources_follow_docker_rules() -> None:
    spec = _spec(memory=64 << 20, nano_cpus=1_500_000_000, cpu_shares=512, cpuset_cpus="0-1", pids_limit=100)
    res = spec["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert res["cpu"] == {"shares": 512, "period": 100_000, "quota": 150_000, "cpus": "0-1"}
    assert res["pids"] == {"limit": 100}
    assert spec["linux"]["cgroupsPath"] == "/dockyard/c1"


def test_explicit_cpu_quota_and_unlimited_swap() -> None:
    res = _spec(memory=1 << 20, memory_swap=-1, cpu_quota=20_000, cpu_period=50_000)["linux"]["resources"]
    assert res["memory"] == {"limit": 1 << 20, "swap": -1}
    assert res["cpu"] == {"period": 50_000, "quota": 20_000}


def test_no_limits_means_no_resource_sections() -> None:
    res = _spec(pids_limit=-1)["linux"]["resources"]
    assert set(res) == {"devices"}


def test_capabilities_add_and_drop() -> None:
    caps = normalize_capabilities(["net_admin", "CAP_SYS_PTRACE"], ["MKNOD", "cap_kill"])
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_PTRACE" in caps
    assert "CAP_MKNOD" not in caps and "CAP_KILL" not in caps
    assert normalize_capabilities(["CHOWN"], ["ALL"]) == ["CAP_CHOWN"]
    assert normalize_capabilities(["ALL"], ["SYS_ADMIN"]) == [c for c in ALL_CAPS if c != "CAP_SYS_ADMIN"]
    with pytest.raises(InvalidParameter, match="unknown capability"):
        normalize_capabilities(["NOPE"], [])


def test_privileged_drops_confinement() -> None:
    spec = _spec(privileged=True, seccomp={"defaultAction": "SCMP_ACT_ERRNO"})
    assert spec["process"]["capabilities"]["bounding"] == list(ALL_CAPS)
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert "seccomp" not in spec["linux"]
    assert "ro" not in _mount(spec, "/sys")["options"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_seccomp_profile_is_placed() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    assert _spec(seccomp=profile)["linux"]["seccomp"] == profile


def test_mounts_binds_tmpfs_and_etc_files() -> None:
    spec = _spec(
        binds=[BindMount("/host/data", "/data", readonly=True), BindMount("/host/shm", "/dev/shm")],
        tmpfs={"/run": "size=1m"},
        hosts_path=Path("/b/hosts"),
        hostname_path=Path("/b/hostname"),
        resolv_conf_path=Path("/b/resolv.conf"),
        shm_size=1 << 20,
        readonly_rootfs=True,
    )
    assert _mount(spec, "/data") == {
        "destination": "/data",
        "type": "bind",
        "source": "/host/data",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert _mount(spec, "/dev/shm")["source"] == "/host/shm"  # user bind replaces the default
    assert _mount(spec, "/run")["options"] == ["nosuid", "nodev", "noexec", "size=1m"]
    assert _mount(spec, "/etc/hosts")["source"] == "/b/hosts"
    assert _mount(spec, "/etc/hostname")["source"] == "/b/hostname"
    assert _mount(spec, "/etc/resolv.conf")["source"] == "/b/resolv.conf"
    assert spec["root"] == {"path": "/r", "readonly": True}


def test_shm_size() -> None:
    assert "size=1048576" in _mount(_spec(shm_size=1 << 20), "/dev/shm")["options"]


def test_rlimits_are_clamped_to_daemon_hard_limit() -> None:
    rlimits = _spec(rlimits=[Rlimit("nofile", 4096, 8192), Rlimit("nproc", 10, 20)])["process"]["rlimits"]
    assert rlimits == [
        {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
        {"type": "RLIMIT_NPROC", "hard": 20, "soft": 10},
    ]
    with pytest.raises(InvalidParameter):
        _spec(rlimits=[Rlimit("bogus", 1, 1)])


def test_user_and_groups_in_process() -> None:
    user = _spec(uid=1000, gid=100, additional_gids=[10, 20])["process"]["user"]
    assert user == {"uid": 1000, "gid": 100, "additionalGids": [10, 20]}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001:Alice:/home/alice:/bin/sh\n"
    )
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:alice,bob\nalice:x:1001:\nwheel:x:10:alice\n")
    return tmp_path


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (0, 0, [])),
        ("root", (0, 0, [])),
        ("alice", (1000, 1001, [50, 10])),
        ("1000", (1000, 1001, [50, 10])),
        ("4242", (4242, 0, [])),
        ("alice:staff", (1000, 50, [10])),
        ("alice:77", (1000, 77, [50, 10])),
        ("4242:4343", (4242, 4343, [])),
    ],
)
def test_resolve_user(rootfs: Path, user: str, expected: tuple[int, int, list[int]]) -> None:
    assert resolve_user(rootfs, user) == expected


def test_resolve_unknown_user_and_group(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(
        InvalidParameter, match=r"^unable to find user xyz: no matching entries in passwd file$"
    ):
        resolve_user(rootfs, "xyz")
    with pytest.raises(
        InvalidParameter, match=r"^unable to find group nogrp: no matching entries in group file$"
    ):
        resolve_user(rootfs, "alice:nogrp")
    with pytest.raises(InvalidParameter, match="unable to find user bob"):
        resolve_user(tmp_path / "empty", "bob")
