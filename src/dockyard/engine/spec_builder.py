"""From a container record to the OCI spec: resolve the user, write /etc/hosts, /etc/hostname and
/etc/resolv.conf for the container, and translate HostConfig into :class:`ocispec.SpecInput`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dockyard.engine.container import Container, ContainerPaths
from dockyard.engine.create_config import parse_bind
from dockyard.engine.ocispec import BindMount, Rlimit, SpecInput, build_spec, resolve_user

_HOST_RESOLV = Path("/etc/resolv.conf")


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
        privileged=bool(hc.get("Privileged")),
        cap_add=hc.get("CapAdd") or (),
        cap_drop=hc.get("CapDrop") or (),
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        no_new_privileges="no-new-privileges" in (hc.get("SecurityOpt") or ())
        or "no-new-privileges:true" in (hc.get("SecurityOpt") or ()),
        binds=binds,
        tmpfs=tmpfs,
        hosts_path=files["hosts"],
        hostname_path=files["hostname"],
        resolv_conf_path=files["resolv.conf"],
        shm_size=hc.get("ShmSize") or 0,
        rlimits=[Rlimit(u["Name"], int(u["Soft"]), int(u["Hard"])) for u in hc.get("Ulimits") or ()],
    )
    return build_spec(inp)


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
        extra = "".join(f"{h.split(':', 1)[1]}\t{h.split(':', 1)[0]}\n" for h in c.host_config.get("ExtraHosts") or ()
                        if ":" in h)  # fmt: skip
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
