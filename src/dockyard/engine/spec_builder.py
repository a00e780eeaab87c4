"""From a container record to the OCI spec: resolve the user, write /etc/hosts, /etc/hostname and
/etc/resolv.conf for the container, and translate HostConfig into :class:`ocispec.SpecInput`."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from dockyard.engine.container import Container, ContainerPaths
from dockyard.engine.create_config import parse_bind
from dockyard.engine.ocispec import (
    ALL_CAPS,
    BindMount,
    Rlimit,
    SpecInput,
    build_spec,
    normalize_capabilities,
    resolve_user,
)
from dockyard.engine.seccomp import container_seccomp, parse_security_opts

_HOST_RESOLV = Path("/etc/resolv.conf")
_SKIP_DEV = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def build_container_spec(c: Container, rootfs: Path, paths: ContainerPaths) -> dict[str, Any]:
    """The OCI spec for starting ``c`` on ``rootfs``."""
    hc = c.host_config
    cfg = c.config
    uid, gid, extra_gids = resolve_user(rootfs, cfg.get("User") or "")
    files = _write_etc_files(c, paths)
    binds = [BindMount(*parse_bind(b)) for b in hc.get("Binds") or ()]
    binds += [_mount_entry(m) for m in hc.get("Mounts") or () if m.get("Type", "bind") == "bind"]
    tmpfs = dict(hc.get("Tmpfs") or {})
    tmpfs.update({m["Target"]: "" for m in hc.get("Mounts") or () if m.get("Type") == "tmpfs"})
    env = list(cfg.get("Env") or [])  # build_spec adds PATH, HOSTNAME and TERM as dockerd does
    mode = hc.get("NetworkMode") or "default"
    security = parse_security_opts(hc.get("SecurityOpt") or ())
    privileged = bool(hc.get("Privileged"))
    caps = _capabilities(hc, privileged)
    inp = SpecInput(
        container_id=c.id,
        rootfs=rootfs,
        args=[c.path, *c.args],
        env=env,
        cwd=cfg.get("WorkingDir") or "/",
        uid=uid,
        gid=gid,
        additional_gids=extra_gids,
        hostname=cfg.get("Hostname") or c.id[:12],
        tty=c.tty,
        open_stdin=bool(cfg.get("OpenStdin")),
        network_mode="host" if mode == "host" else "none",
        memory=hc.get("Memory") or 0,
        memory_swap=hc.get("MemorySwap") or 0,
        nano_cpus=hc.get("NanoCpus") or 0,
        cpu_shares=hc.get("CpuShares") or 0,
        cpu_quota=hc.get("CpuQuota") or 0,
        cpu_period=hc.get("CpuPeriod") or 0,
        cpuset_cpus=hc.get("CpusetCpus") or "",
        cpuset_mems=hc.get("CpusetMems") or "",
        pids_limit=hc.get("PidsLimit") if (hc.get("PidsLimit") or 0) > 0 else None,
        privileged=privileged,
        cap_add=hc.get("CapAdd") or (),
        cap_drop=hc.get("CapDrop") or (),
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        no_new_privileges=security.no_new_privileges,
        binds=binds,
        tmpfs=tmpfs,
        hosts_path=files["hosts"],
        hostname_path=files["hostname"],
        resolv_conf_path=files["resolv.conf"],
        shm_size=hc.get("ShmSize") or 0,
        rlimits=[Rlimit(u["Name"], int(u["Soft"]), int(u["Hard"])) for u in hc.get("Ulimits") or ()],
        seccomp=container_seccomp(security, privileged, caps),
        capabilities=caps,
    )
    spec = build_spec(inp)
    if privileged:
        spec["linux"]["devices"] = host_devices()
    return spec


def _capabilities(hc: dict[str, Any], privileged: bool) -> list[str]:
    # "All" is all that the daemon holds, for --privileged and --cap-add ALL (moby's GetAllCapabilities).
    if privileged:
        return held_capabilities()
    add = hc.get("CapAdd") or ()
    caps = normalize_capabilities(add, hc.get("CapDrop") or ())
    if any(a.strip().upper() == "ALL" for a in add):
        held = set(held_capabilities())
        caps = [c for c in caps if c in held]
    return caps


def held_capabilities(status: Path = Path("/proc/self/status")) -> list[str]:
    """The capabilities of the daemon's bounding set: what ``--privileged`` gives, as moby does, since a
    runtime cannot grant a capability its parent lacks (nested or sandboxed daemons)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [cap for bit, cap in enumerate(ALL_CAPS) if mask >> bit & 1]
    return list(ALL_CAPS)


def host_devices(dev: Path = Path("/dev")) -> list[dict[str, Any]]:
    """Every character and block device under ``dev``, as Docker hands them to privileged containers.

    Skips what runc's ``HostDevices`` skips: the pts, shm, fd and mqueue trees and /dev/console.
    """
    found: list[dict[str, Any]] = []
    for path in sorted(dev.rglob("*")):
        rel = path.relative_to(dev).parts
        if rel[0] in _SKIP_DEV or path == dev / "console":
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else ""
        if kind:
            found.append({"path": str(path), "type": kind, "major": os.major(st.st_rdev),
                          "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
                          "uid": st.st_uid, "gid": st.st_gid})  # fmt: skip
    return found


def _mount_entry(m: dict[str, Any]) -> BindMount:
    return BindMount(str(m.get("Source", "")), str(m.get("Target", "")), bool(m.get("ReadOnly")))


def etc_paths(c: Container, paths: ContainerPaths) -> dict[str, Path]:
    """Where the container's hosts, hostname and resolv.conf live."""
    base = paths.dir(c.id)
    return {name: base / name for name in ("hosts", "hostname", "resolv.conf")}


def _write_etc_files(c: Container, paths: ContainerPaths) -> dict[str, Path]:
    files = etc_paths(c, paths)
    base = paths.dir(c.id)
    base.mkdir(parents=True, exist_ok=True)
    hostname = c.config.get("Hostname") or c.id[:12]
    host_mode = (c.host_config.get("NetworkMode") or "") == "host"
    if host_mode:
        files["hosts"].write_text(_read("/etc/hosts", "127.0.0.1\tlocalhost\n"))
        files["hostname"].write_text(_read("/etc/hostname", hostname + "\n"))
    else:
        pairs = [h.split(":", 1) for h in c.host_config.get("ExtraHosts") or () if ":" in h]
        extra = "".join(f"{address}\t{name}\n" for name, address in pairs)
        files["hosts"].write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
            f"127.0.1.1\t{hostname}\n{extra}"
        )
        files["hostname"].write_text(hostname + "\n")
    files["resolv.conf"].write_text(_resolv_conf(c))
    return files


def _resolv_conf(c: Container) -> str:
    dns = c.host_config.get("Dns") or []
    search = c.host_config.get("DnsSearch") or []
    options = c.host_config.get("DnsOptions") or []
    if not (dns or search or options):
        return _read(str(_HOST_RESOLV), "")
    lines = [f"nameserver {d}" for d in dns]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _read(path: str, default: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default
