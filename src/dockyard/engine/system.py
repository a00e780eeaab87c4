"""System-wide views: version and info."""

from __future__ import annotations

import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from dockyard import __version__


class Counts(Protocol):
    """What system info needs to know about containers and images."""

    def counts(self, owner: str | None = None) -> dict[str, int]:
        """Container counts by state: total, running, paused, stopped (``owner``'s only, when given)."""
        ...

    def image_count(self, owner: str | None = None) -> int:
        """Number of images (those ``owner`` sees, when given: its own and the unowned ones)."""
        ...


_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class SystemService:
    """Answers ``/version`` and ``/info``."""

    def __init__(
        self,
        counts: Counts,
        *,
        data_root: Path,
        runtime_name: str,
        storage_driver: str,
        min_api: str,
        max_api: str,
    ) -> None:
        self._counts = counts
        self._data_root = data_root
        self._runtime = runtime_name
        self._driver = storage_driver
        self._min_api = min_api
        self._max_api = max_api
        self._id = _daemon_id(data_root)

    def version(self) -> dict[str, Any]:
        """The ``/version`` document (docker's CLI reads ``Components[].Details``)."""
        uname = os.uname()
        details = {
            "ApiVersion": self._max_api,
            "Arch": _ARCH.get(uname.machine, uname.machine),
            "BuildTime": "",
            "Experimental": "false",
            "GitCommit": "dockyard",
            "GoVersion": f"python{platform.python_version()}",
            "KernelVersion": uname.release,
            "MinAPIVersion": self._min_api,
            "Os": "linux",
        }
        return {
            "Platform": {"Name": "dockyard"},
            "Components": [
                {"Name": "Engine", "Version": __version__, "Details": details},
                {"Name": self._runtime, "Version": "", "Details": {"GitCommit": ""}},
            ],
            "Version": __version__,
            "ApiVersion": self._max_api,
            "MinAPIVersion": self._min_api,
            "GitCommit": "dockyard",
            "GoVersion": details["GoVersion"],
            "Os": "linux",
            "Arch": details["Arch"],
            "KernelVersion": uname.release,
            "BuildTime": "",
        }

    def info(self, owner: str | None = None) -> dict[str, Any]:
        """The ``/info`` document; a caller confined to ``owner``'s objects counts only those it can see."""
        counts = self._counts.counts(owner)
        uname = os.uname()
        return {
            "ID": self._id,
            "Containers": counts["total"],
            "ContainersRunning": counts["running"],
            "ContainersPaused": counts["paused"],
            "ContainersStopped": counts["stopped"],
            "Images": self._counts.image_count(owner),
            "Driver": self._driver,
            "DriverStatus": [["Backing Filesystem", "extfs"]] if self._driver == "overlay2" else [],
            "Plugins": {
                "Volume": [], "Network": ["host", "null"], "Authorization": None, "Log": ["k8s-file"]
            },
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": 0,
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
            "LoggingDriver": "k8s-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if _pure_cgroup_v2() else "1",
            "KernelVersion": uname.release,
            "OperatingSystem": _os_name(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": uname.machine,
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
            "GenericResources": None,
            "DockerRootDir": str(self._data_root),
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": uname.nodename,
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": __version__,
            "Runtimes": {self._runtime: {"path": self._runtime}},
            "DefaultRuntime": self._runtime,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
            "Warnings": [],
        }  # fmt: skip


def _daemon_id(data_root: Path) -> str:
    path = data_root / "engine-id"
    try:
        return path.read_text().strip()
    except OSError:
        ident = str(uuid.uuid4())
        data_root.mkdir(parents=True, exist_ok=True)
        path.write_text(ident)
        return ident


def _pure_cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
