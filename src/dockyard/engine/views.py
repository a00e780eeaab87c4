"""Container wire shapes: ``ContainerInspect`` and ``ContainerSummary`` as Docker sends them."""

from __future__ import annotations

import shlex
import time
from typing import Any

from dockyard.engine import state as st
from dockyard.engine.container import Container, ContainerPaths
from dockyard.engine.create_config import parse_bind
from dockyard.engine.exec import exec_ids
from dockyard.engine.ocispec import MASKED_PATHS, READONLY_PATHS
from dockyard.engine.spec_builder import etc_paths

_HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "NetworkMode": "default",
    "PortBindings": {},
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "private",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "ConsoleSize": [0, 0],
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [],
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": None,
    "OomKillDisable": False,
    "PidsLimit": None,
    "Ulimits": [],
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "Mounts": [],
    "Tmpfs": {},
}

_CONFIG_KEYS = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Healthcheck",
    "ArgsEscaped",
    "NetworkDisabled",
    "MacAddress",
    "Shell",
)


def state_doc(c: Container) -> dict[str, Any]:
    """``State`` of inspect."""
    s = c.state
    restarting = s.status == st.RESTARTING
    return {
        "Status": s.status,
        "Running": s.running or restarting,
        "Paused": s.status == st.PAUSED,
        "Restarting": restarting,
        "OOMKilled": s.oom_killed,
        "Dead": s.status == st.DEAD,
        "Pid": s.pid,
        "ExitCode": s.exit_code,
        "Error": s.error,
        "StartedAt": st.rfc3339(s.started_at) if s.started_at else st.ZERO_TIME,
        "FinishedAt": st.rfc3339(s.finished_at) if s.finished_at else st.ZERO_TIME,
    }


def host_config_doc(c: Container, runtime: str) -> dict[str, Any]:
    """``HostConfig`` of inspect: what was asked, over Docker's defaults."""
    doc = dict(_HOST_CONFIG_DEFAULTS)
    doc.update({k: v for k, v in c.host_config.items() if v is not None or k == "PidsLimit"})
    doc["NetworkMode"] = c.host_config.get("NetworkMode") or "default"
    doc["Runtime"] = runtime
    privileged = bool(c.host_config.get("Privileged"))
    doc["MaskedPaths"] = None if privileged else list(MASKED_PATHS)
    doc["ReadonlyPaths"] = None if privileged else list(READONLY_PATHS)
    if not doc.get("ShmSize"):
        doc["ShmSize"] = 67108864
    return doc


def config_doc(c: Container) -> dict[str, Any]:
    """``Config`` of inspect."""
    cfg = {k: c.config.get(k) for k in _CONFIG_KEYS if k in c.config or k in ("Env", "Cmd", "Entrypoint")}
    cfg["Hostname"] = c.config.get("Hostname") or c.id[:12]
    cfg["Labels"] = c.config.get("Labels") or {}
    cfg["OnBuild"] = c.config.get("OnBuild")
    return cfg


def inspect(
    c: Container, paths: ContainerPaths, runtime: str, graph_driver: dict[str, Any]
) -> dict[str, Any]:
    """The full ``ContainerInspect`` document."""
    etc = etc_paths(c, paths)
    mode = c.host_config.get("NetworkMode") or "default"
    net_name = "bridge" if mode in ("default", "") else mode
    return {
        "Id": c.id,
        "Created": st.rfc3339(c.created),
        "Path": c.path,
        "Args": c.args,
        "State": state_doc(c),
        "Image": c.image_id,
        "ResolvConfPath": str(etc["resolv.conf"]),
        "HostnamePath": str(etc["hostname"]),
        "HostsPath": str(etc["hosts"]),
        "LogPath": str(paths.log(c.id)),
        "Name": c.name,
        "RestartCount": c.restart_count,
        "Driver": graph_driver["Name"],
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids(c),
        "HostConfig": host_config_doc(c, runtime),
        "GraphDriver": graph_driver,
        "Mounts": mounts_doc(c),
        "Config": config_doc(c),
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": {},
            "SandboxKey": "",
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": "",
            "Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": "",
            "IPPrefixLen": 0,
            "IPv6Gateway": "",
            "MacAddress": "",
            "Networks": {net_name: _endpoint()},
        },
    }


def _endpoint() -> dict[str, Any]:
    return {
        "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "", "EndpointID": "", "Gateway": "",
        "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": None, "DNSNames": None,
    }  # fmt: skip


def mounts_doc(c: Container) -> list[dict[str, Any]]:
    """``Mounts`` (bind mounts only for now)."""
    out = []
    for bind in c.host_config.get("Binds") or ():
        source, dest, readonly = parse_bind(bind)
        out.append({"Type": "bind", "Source": source, "Destination": dest, "Mode": "ro" if readonly else "",
                    "RW": not readonly, "Propagation": "rprivate"})  # fmt: skip
    return out


def command_text(c: Container) -> str:
    """``Command`` of the summary: path and args, quoted when needed as Docker does."""
    return " ".join(a if a and " " not in a else shlex.quote(a) for a in [c.path, *c.args])


def summary(c: Container, now: float | None = None) -> dict[str, Any]:
    """One ``ContainerSummary`` (``docker ps`` row)."""
    now = time.time() if now is None else now
    mode = c.host_config.get("NetworkMode") or "default"
    net_name = "bridge" if mode in ("default", "") else mode
    return {
        "Id": c.id,
        "Names": [c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": command_text(c),
        "Created": int(c.created),
        "Ports": [],
        "Labels": c.config.get("Labels") or {},
        "State": c.state.status,
        "Status": st.status_text(c.state, False, now),
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {net_name: _endpoint()}},
        "Mounts": mounts_doc(c),
    }
