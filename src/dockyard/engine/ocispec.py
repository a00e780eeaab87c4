"""Docker's Config + HostConfig, already resolved, to an OCI runtime spec (pure, golden-file tested).

The defaults copy what dockerd (through containerd's default spec) hands to runc: its default
capability set, masked and read-only /proc paths, /sys read-only, the usual /dev mounts and devices,
and private pid/ipc/uts/mount (and network unless ``host``) namespaces. No library builds OCI specs
in Python, so this is a plain dict builder; the default seccomp profile plugs in through
``SpecInput.seccomp``.
"""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.errors import InvalidParameter

__all__ = ["BindMount", "Rlimit", "SpecInput", "build_spec", "normalize_capabilities", "resolve_user"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
CPU_PERIOD_FOR_NANO_CPUS = 100_000

DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Linux capabilities 0..40 in kernel order (CAP_CHECKPOINT_RESTORE is the last runc 1.1 knows).
_CAP_NAMES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]
ALL_CAPS = tuple("CAP_" + name for name in _CAP_NAMES)

MASKED_PATHS = (
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
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# (path, type, major, minor) of the device nodes every container gets.
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
)
# Cgroup device rules beyond the nodes: console, pty master/slaves, tun (as Docker allows them).
EXTRA_DEVICE_RULES: tuple[tuple[int, int | None], ...] = ((5, 1), (136, None), (5, 2), (10, 200))


@dataclass(frozen=True)
class BindMount:
    """A host path bound into the container."""

    source: str
    destination: str
    readonly: bool = False


@dataclass(frozen=True)
class Rlimit:
    """A resource limit by Docker's short name (``nofile``, ``nproc``, ...)."""

    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class SpecInput:
    """Everything :func:`build_spec` needs, already resolved by the engine.

    ``args`` is the merged entrypoint + cmd; ``uid``/``gid``/``additional_gids`` come from
    :func:`resolve_user`. Zero means "not set" for resource numbers, as in Docker's HostConfig.
    ``network_ns_path`` joins an existing network namespace (prepared by the network layer).
    """

    container_id: str
    rootfs: Path
    args: Sequence[str]
    env: Sequence[str] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: Sequence[int] = ()
    hostname: str = ""
    tty: bool = False
    open_stdin: bool = False
    network_mode: str = "none"
    network_ns_path: str | None = None
    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None
    privileged: bool = False
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    readonly_rootfs: bool = False
    no_new_privileges: bool = False
    binds: Sequence[BindMount] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    hosts_path: Path | None = None
    hostname_path: Path | None = None
    resolv_conf_path: Path | None = None
    shm_size: int = 0
    rlimits: Sequence[Rlimit] = ()
    seccomp: Mapping[str, Any] | None = None
    # Already resolved by the engine (privileged: what the daemon itself holds); None = from the fields above.
    capabilities: Sequence[str] | None = None


def build_spec(inp: SpecInput, hard_limit: Callable[[str], int] | None = None) -> dict[str, Any]:
    """Build the OCI runtime spec (config.json content) for one container.

    Args:
        inp: the resolved container configuration.
        hard_limit: returns the daemon's own hard limit for an rlimit name (``-1`` = unlimited);
            defaults to reading this process's limits. Requested rlimits are clamped to it because
            raising a hard limit needs CAP_SYS_RESOURCE, which the daemon may lack.

    Returns:
        The spec as a JSON-ready dict.

    Raises:
        InvalidParameter: an unknown capability or rlimit name.
    """
    if inp.capabilities is not None:
        caps = list(inp.capabilities)
    else:
        caps = list(ALL_CAPS) if inp.privileged else normalize_capabilities(inp.cap_add, inp.cap_drop)
    linux: dict[str, Any] = {
        "cgroupsPath": f"/dockyard/{inp.container_id}",
        "namespaces": _namespaces(inp),
        "resources": _resources(inp),
    }
    if inp.network_mode != "host":
        linux["sysctl"] = {
            "net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.ping_group_range": "0 2147483647",
        }
    if not inp.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        linux["devices"] = [_device(*dev) for dev in DEFAULT_DEVICES]
        if inp.seccomp is not None:
            linux["seccomp"] = dict(inp.seccomp)
    return {
        "ociVersion": "1.0.2",
        "process": _process(inp, caps, hard_limit or _daemon_hard_limit),
        "root": {"path": str(inp.rootfs), "readonly": inp.readonly_rootfs},
        "hostname": inp.hostname,
        "mounts": _mounts(inp),
        "linux": linux,
    }


def normalize_capabilities(cap_add: Sequence[str], cap_drop: Sequence[str]) -> list[str]:
    """Apply Docker's CapAdd/CapDrop (names with or without ``CAP_``, or ``ALL``) to its default set.

    Raises:
        InvalidParameter: a name that is not a Linux capability.
    """
    add = [_cap_name(c) for c in cap_add]
    drop = [_cap_name(c) for c in cap_drop]
    if "ALL" in add:
        return [c for c in ALL_CAPS if c not in drop]
    caps = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    return caps + [c for c in dict.fromkeys(add) if c not in caps]


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in ALL_CAPS:
        raise InvalidParameter(f'unknown capability: "{full}"')
    return full


def _process(inp: SpecInput, caps: list[str], hard_limit: Callable[[str], int]) -> dict[str, Any]:
    user: dict[str, Any] = {"uid": inp.uid, "gid": inp.gid}
    if inp.additional_gids:
        user["additionalGids"] = list(inp.additional_gids)
    process: dict[str, Any] = {
        "terminal": inp.tty,
        "user": user,
        "args": list(inp.args),
        "env": _env(inp),
        "cwd": inp.cwd or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": inp.no_new_privileges,
    }
    rlimits = [_rlimit(r, hard_limit) for r in inp.rlimits]
    if rlimits:
        process["rlimits"] = rlimits
    return process


def _env(inp: SpecInput) -> list[str]:
    # Docker adds PATH (when the image has none), HOSTNAME and, with a tty, TERM before the user's env.
    env: list[str] = []
    if not any(e.startswith("PATH=") for e in inp.env):
        env.append("PATH=" + DEFAULT_PATH)
    env.append("HOSTNAME=" + inp.hostname)
    if inp.tty:
        env.append("TERM=xterm")
    return env + list(inp.env)


def _rlimit(limit: Rlimit, hard_limit: Callable[[str], int]) -> dict[str, Any]:
    name = "RLIMIT_" + limit.name.upper().removeprefix("RLIMIT_")
    if not hasattr(resource, name):
        raise InvalidParameter(f"invalid ulimit type: {limit.name}")
    ceiling = hard_limit(name)
    hard = limit.hard if ceiling < 0 or 0 <= limit.hard <= ceiling else ceiling
    soft = limit.soft if 0 <= limit.soft <= hard or hard < 0 else hard
    return {"type": name, "hard": hard, "soft": soft}


def _daemon_hard_limit(name: str) -> int:
    hard = resource.getrlimit(getattr(resource, name))[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


def _namespaces(inp: SpecInput) -> list[dict[str, str]]:
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if inp.network_ns_path:
        namespaces.append({"type": "network", "path": inp.network_ns_path})
    elif inp.network_mode != "host":
        namespaces.append({"type": "network"})
    return namespaces


def _resources(inp: SpecInput) -> dict[str, Any]:
    resources: dict[str, Any] = {"devices": _device_rules(inp.privileged)}
    memory: dict[str, int] = {}
    if inp.memory > 0:
        memory["limit"] = inp.memory
        # Docker: MemorySwap 0 means twice the memory; -1 unlimited; otherwise memory+swap total.
        memory["swap"] = inp.memory * 2 if inp.memory_swap == 0 else inp.memory_swap
    if memory:
        resources["memory"] = memory
    cpu = _cpu(inp)
    if cpu:
        resources["cpu"] = cpu
    if inp.pids_limit is not None and inp.pids_limit > 0:
        resources["pids"] = {"limit": inp.pids_limit}
    return resources


def _cpu(inp: SpecInput) -> dict[str, Any]:
    cpu: dict[str, Any] = {}
    if inp.cpu_shares > 0:
        cpu["shares"] = inp.cpu_shares
    if inp.nano_cpus > 0:
        cpu["period"] = CPU_PERIOD_FOR_NANO_CPUS
        cpu["quota"] = inp.nano_cpus * CPU_PERIOD_FOR_NANO_CPUS // 1_000_000_000
    else:
        if inp.cpu_period > 0:
            cpu["period"] = inp.cpu_period
        if inp.cpu_quota > 0:
            cpu["quota"] = inp.cpu_quota
    if inp.cpuset_cpus:
        cpu["cpus"] = inp.cpuset_cpus
    if inp.cpuset_mems:
        cpu["mems"] = inp.cpuset_mems
    return cpu


def _device(path: str, kind: str, major: int, minor: int) -> dict[str, Any]:
    return {"path": path, "type": kind, "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0}


def _device_rules(privileged: bool) -> list[dict[str, Any]]:
    if privileged:
        return [{"allow": True, "access": "rwm"}]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    pairs = [(major, minor) for _, _, major, minor in DEFAULT_DEVICES] + list(EXTRA_DEVICE_RULES)
    for major, minor in pairs:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:  # an absent minor is the OCI wildcard
            rule["minor"] = minor
        rules.append(rule)
    return rules


def _mounts(inp: SpecInput) -> list[dict[str, Any]]:
    ro = [] if inp.privileged else ["ro"]
    shm = inp.shm_size or DEFAULT_SHM_SIZE
    mounts: list[dict[str, Any]] = [
        _m("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _m("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _m(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _m("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", *ro]),
        _m("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", *ro]),
        _m("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _m("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]),
    ]
    for dest, opts in inp.tmpfs.items():
        extra = [o for o in opts.split(",") if o]
        mounts.append(_m(dest, "tmpfs", "tmpfs", ["nosuid", "nodev", "noexec", *extra]))
    for dest, src in (
        ("/etc/resolv.conf", inp.resolv_conf_path),
        ("/etc/hostname", inp.hostname_path),
        ("/etc/hosts", inp.hosts_path),
    ):
        if src is not None:
            mounts.append(_m(dest, "bind", str(src), ["rbind", "rprivate"]))
    for bind in inp.binds:
        mounts.append(
            _m(
                bind.destination,
                "bind",
                bind.source,
                ["rbind", "rprivate", *(["ro"] if bind.readonly else [])],
            )
        )
    return _last_wins(mounts)


def _m(dest: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": kind, "source": source, "options": options}


def _last_wins(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A user mount on a default destination replaces the default, as in Docker.
    result: list[dict[str, Any]] = []
    for index, mount in enumerate(mounts):
        later = {m["destination"].rstrip("/") or "/" for m in mounts[index + 1 :]}
        if (mount["destination"].rstrip("/") or "/") not in later:
            result.append(mount)
    return result


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """Resolve Docker's ``User`` ("name", "uid", "uid:gid", "name:group") against the rootfs.

    Follows moby's rules: a numeric uid missing from /etc/passwd is used as is with gid 0; a name
    must exist. Supplementary groups are those of /etc/group that list the user as a member.

    Args:
        rootfs: the container's root directory (its /etc/passwd and /etc/group are read).
        user: the ``User`` string; empty means root.

    Returns:
        (uid, gid, additional gids).

    Raises:
        InvalidParameter: an unknown user or group name, with Docker's message.
    """
    name_or_uid, _, group = (user or "0").partition(":")
    passwd = _read_db(rootfs / "etc/passwd")
    groups = _read_db(rootfs / "etc/group")
    entry = next((e for e in passwd if len(e) > 3 and name_or_uid in (e[0], e[2])), None)
    if entry is None:
        if not name_or_uid.isdigit():
            raise InvalidParameter(f"unable to find user {name_or_uid}: no matching entries in passwd file")
        uid, gid, name = int(name_or_uid), 0, ""
    else:
        uid, gid, name = _int(entry[2]), _int(entry[3]), entry[0]
    if group:
        gid = _resolve_group(groups, group)
    extra = [_int(g[2]) for g in groups if len(g) > 3 and name and name in g[3].split(",")]
    return uid, gid, [g for g in dict.fromkeys(extra) if g != gid]


def _resolve_group(groups: list[list[str]], group: str) -> int:
    entry = next((g for g in groups if len(g) > 2 and group in (g[0], g[2])), None)
    if entry is not None:
        return _int(entry[2])
    if group.isdigit():
        return int(group)
    raise InvalidParameter(f"unable to find group {group}: no matching entries in group file")


_MAX_DB_BYTES = 4 << 20


def _read_db(path: Path) -> list[list[str]]:
    """Lines of an image's /etc/passwd or /etc/group.

    The image is untrusted: the file may be a symlink to a device or to a host file (the daemon resolves it
    outside the container), so only a regular file is read, non-blocking, and at most a few MiB of it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        text = os.read(fd, _MAX_DB_BYTES).decode(errors="replace")
    except OSError:
        return []
    finally:
        os.close(fd)
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
