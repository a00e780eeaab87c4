"""Docker's default hardening, seen from inside real containers started with the real docker CLI:
capabilities, seccomp, no-new-privileges, masked and read-only /proc paths, read-only /sys, --privileged."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import docker
import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.root

DOCKER_DEFAULT_CAPS = "00000000a80425fb"
NET_ADMIN_BIT = 1 << 12


def run(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """``docker run --rm [args]`` (options, image and command in ``args``)."""
    return daemon.cli("run", "--rm", *args, check=check)


def status(daemon: Daemon, *opts: str) -> dict[str, str]:
    """The container's /proc/self/status as a dict."""
    out = run(daemon, *opts, "busybox", "cat", "/proc/self/status").stdout.decode()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def host_bounding_mask() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapBnd:"))
    return int(line.split()[1], 16)


def test_default_capabilities_are_dockers(daemon: Daemon) -> None:
    st = status(daemon)
    assert st["CapEff"] == DOCKER_DEFAULT_CAPS
    assert st["CapPrm"] == DOCKER_DEFAULT_CAPS
    assert st["CapBnd"] == DOCKER_DEFAULT_CAPS
    assert st["CapInh"] == st["CapAmb"] == "0000000000000000"
    assert st["NoNewPrivs"] == "0"


def test_cap_drop_all(daemon: Daemon) -> None:
    st = status(daemon, "--cap-drop", "ALL")
    assert int(st["CapEff"], 16) == int(st["CapBnd"], 16) == 0


def test_cap_add_and_drop_one(daemon: Daemon) -> None:
    added = status(daemon, "--cap-add", "NET_ADMIN")
    assert int(added["CapEff"], 16) == int(DOCKER_DEFAULT_CAPS, 16) | NET_ADMIN_BIT
    assert int(added["CapBnd"], 16) == int(DOCKER_DEFAULT_CAPS, 16) | NET_ADMIN_BIT
    dropped = status(daemon, "--cap-drop", "chown", "--cap-add", "cap_net_admin")
    assert int(dropped["CapEff"], 16) == (int(DOCKER_DEFAULT_CAPS, 16) | NET_ADMIN_BIT) & ~1


def test_cap_drop_all_then_add_one(daemon: Daemon) -> None:
    st = status(daemon, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN")
    assert int(st["CapBnd"], 16) == NET_ADMIN_BIT


def test_cap_add_all_gets_what_the_daemon_holds(daemon: Daemon) -> None:
    st = status(daemon, "--cap-add", "ALL")
    assert int(st["CapEff"], 16) == host_bounding_mask()
    assert st["Seccomp"] == "2", "only --privileged lifts the seccomp filter"


def test_unknown_capability_is_refused(daemon: Daemon) -> None:
    proc = run(daemon, "--cap-add", "NOT_A_CAP", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b'unknown capability: "CAP_NOT_A_CAP"' in proc.stderr


def test_seccomp_filter_is_on_by_default_and_blocks_namespaces(daemon: Daemon) -> None:
    assert status(daemon)["Seccomp"] == "2"
    # unshare(CLONE_NEWUSER) needs no capability: only the seccomp profile stops it.
    proc = run(daemon, "busybox", "unshare", "-U", "true", check=False)
    assert proc.returncode != 0
    assert b"Operation not permitted" in proc.stderr
    mount = run(daemon, "busybox", "sh", "-c", "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m", check=False)
    assert mount.returncode != 0
    assert b"permission denied" in mount.stderr.lower() or b"not permitted" in mount.stderr


def test_seccomp_unconfined(daemon: Daemon) -> None:
    st = status(daemon, "--security-opt", "seccomp=unconfined")
    assert st["Seccomp"] == "0"
    assert st["CapBnd"] == DOCKER_DEFAULT_CAPS
    out = run(daemon, "--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "id", "-u")
    assert out.stdout == b"65534\n"


def test_seccomp_builtin_is_the_default(daemon: Daemon) -> None:
    assert status(daemon, "--security-opt", "seccomp=builtin")["Seccomp"] == "2"


def test_cap_sys_admin_unlocks_mount_through_the_profile(daemon: Daemon) -> None:
    out = run(daemon, "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
              "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && grep -c ' /tmp/m ' /proc/mounts")  # fmt: skip
    assert out.stdout == b"1\n"


def test_custom_profile_from_a_file(daemon: Daemon, tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile, indent=2))
    proc = run(daemon, "--security-opt", f"seccomp={path}", "busybox", "sh", "-c",
               "grep Seccomp: /proc/self/status; mkdir /x", check=False)  # fmt: skip
    assert proc.returncode != 0
    assert b"Seccomp:\t2" in proc.stdout
    assert b"Permission denied" in proc.stderr
    assert run(daemon, "busybox", "mkdir", "/x").returncode == 0


def test_broken_custom_profile_fails_the_start(daemon: Daemon) -> None:
    client = docker.APIClient(base_url=daemon.host)
    try:
        cid = client.create_container(
            "busybox", ["true"], host_config=client.create_host_config(security_opt=["seccomp=[1]"])
        )["Id"]
        with pytest.raises(docker.errors.APIError) as info:
            client.start(cid)
        assert "decoding seccomp profile failed" in str(info.value)
        client.remove_container(cid, force=True)
    finally:
        client.close()


def test_no_new_privileges(daemon: Daemon) -> None:
    assert status(daemon, "--security-opt", "no-new-privileges")["NoNewPrivs"] == "1"
    assert status(daemon, "--security-opt", "no-new-privileges=true")["NoNewPrivs"] == "1"
    assert status(daemon, "--security-opt", "no-new-privileges=false")["NoNewPrivs"] == "0"


def test_unknown_security_opt_is_refused_with_dockers_text(daemon: Daemon) -> None:
    proc = daemon.cli("create", "--security-opt", "x=y", "busybox", check=False)
    assert proc.returncode != 0
    assert b'invalid --security-opt 2: "x=y"' in proc.stderr
    with pytest.raises(docker.errors.APIError) as info:
        daemon.client.containers.create("busybox", security_opt=["x"])
    assert info.value.status_code == 400
    assert 'invalid --security-opt 1: "x"' in str(info.value)


def test_masked_proc_paths(daemon: Daemon) -> None:
    out = run(
        daemon, "busybox", "sh", "-c", "cat /proc/self/mountinfo; echo ===; wc -c /proc/keys /proc/timer_list"
    )
    mountinfo, _, sizes = out.stdout.decode().partition("===")
    targets = {line.split()[4] for line in mountinfo.splitlines()}
    masked = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/acpi", "/proc/scsi", "/sys/firmware",
              "/proc/sched_debug", "/proc/latency_stats", "/proc/timer_stats", "/proc/asound")  # fmt: skip
    for path in masked:
        if Path(path).exists():
            assert path in targets, f"{path} is not masked"
    assert re.search(r"^\s*0 /proc/keys$", sizes, re.M)
    assert re.search(r"^\s*0 /proc/timer_list$", sizes, re.M)
    if Path("/proc/kcore").exists():
        assert run(daemon, "busybox", "sh", "-c", "cat /proc/kcore | wc -c").stdout.strip() == b"0"


def test_proc_sys_and_sys_are_read_only(daemon: Daemon) -> None:
    proc = run(daemon, "busybox", "sh", "-c", "echo dy > /proc/sys/kernel/domainname", check=False)
    assert proc.returncode != 0 and b"Read-only file system" in proc.stderr
    proc = run(daemon, "busybox", "sh", "-c", "echo 1 > /sys/kernel/mm/ksm/run", check=False)
    assert proc.returncode != 0 and b"Read-only file system" in proc.stderr
    mounts = run(daemon, "busybox", "cat", "/proc/mounts").stdout.decode()
    assert re.search(r"^sysfs /sys sysfs ro,", mounts, re.M)
    assert re.search(r"^\S+ /proc/sys proc ro,", mounts, re.M)


def test_privileged(daemon: Daemon) -> None:
    script = (
        "cat /proc/self/status; echo ===; mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo mounted; "
        "grep ' /sys ' /proc/mounts; grep -c /proc/keys /proc/self/mountinfo; ls /dev"
    )
    out = run(daemon, "--privileged", "busybox", "sh", "-c", script).stdout.decode()
    head, _, rest = out.partition("===")
    st = {k: v.strip() for k, _, v in (line.partition(":") for line in head.splitlines())}
    assert int(st["CapBnd"], 16) == int(st["CapEff"], 16) == host_bounding_mask()
    assert st["Seccomp"] == "0"
    assert "mounted" in rest
    assert re.search(r"^sysfs /sys sysfs rw,", rest, re.M)
    assert "\n0\n" in rest, "no masked paths"
    devices = set(rest.split())
    host_extra = [p.name for p in Path("/dev").iterdir() if p.is_char_device() and p.name != "console"]
    assert set(host_extra) <= devices, "privileged containers see the host's devices"


def test_ordinary_tools_still_work_under_the_filter(daemon: Daemon) -> None:
    script = "ls /bin | head -1; ps -o pid,comm | tail -1; id -u; date +%Y >/dev/null; touch /tmp/f; " \
             "ln -s /tmp/f /tmp/l; readlink /tmp/l; chown 1:1 /tmp/f; sleep 0.01; echo ok"  # fmt: skip
    out = run(daemon, "busybox", "sh", "-c", script).stdout.decode().split()
    assert out[-1] == "ok" and "/tmp/f" in out and "0" in out


def test_non_root_user_has_no_effective_capabilities(daemon: Daemon) -> None:
    st = status(daemon, "-u", "1000")
    assert st["CapEff"] == "0000000000000000"
    assert st["CapBnd"] == DOCKER_DEFAULT_CAPS
