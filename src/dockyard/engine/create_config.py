"""Validate a ``ContainerCreate`` body and merge it with the image's config, as Docker does.

Pure functions: no I/O, no state. Type errors in the body become ``InvalidParameter`` naming the field, so a
malformed request can never crash a use-case further down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.engine.seccomp import parse_security_opts
from dockyard.errors import InvalidParameter
from dockyard.security.policy import OWNER_LABEL

RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
NETWORK_MODES = ("", "default", "bridge", "none", "host")
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_STR_SLICE = ("Cmd", "Entrypoint", "Shell")  # Docker's StrSlice: a single string is accepted
_LIST_OF_STR = ("Env", "OnBuild")
_STR = ("Hostname", "Domainname", "User", "WorkingDir", "Image", "StopSignal", "MacAddress")
_BOOL = ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce", "NetworkDisabled")
_HC_INT = (
    "Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuPeriod", "CpuQuota",
    "CpuRealtimePeriod", "CpuRealtimeRuntime", "ShmSize", "KernelMemory", "BlkioWeight", "OomScoreAdj",
)  # fmt: skip
_HC_BOOL = ("Privileged", "AutoRemove", "ReadonlyRootfs", "PublishAllPorts", "Init", "OomKillDisable")
_HC_STR_SLICE = ("CapAdd", "CapDrop")
_HC_LIST = (
    "Binds",
    "CapAdd",
    "CapDrop",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "SecurityOpt",
    "GroupAdd",
)


@dataclass(frozen=True)
class CreateRequest:
    """A validated create body: Docker's Config and HostConfig objects (normalized, still wire-shaped)."""

    config: dict[str, Any]
    host_config: dict[str, Any]


def validate_name(name: str) -> str:
    """Docker's container-name rule; returns the name with its leading slash."""
    if not NAME_RE.match(name):
        raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name if name.startswith("/") else "/" + name


def parse_create(body: Mapping[str, Any]) -> CreateRequest:
    """Check types and normalize the create body (string Cmd → list, nulls → empty)."""
    config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
    for key in _STR_SLICE:
        config[key] = _str_list(config.get(key), key)
    for key in _LIST_OF_STR:
        config[key] = _str_list(config.get(key), key, strict=True)
    for key in _STR:
        config[key] = _typed(config.get(key), str, key, "")
    for key in _BOOL:
        config[key] = _typed(config.get(key), bool, key, False)
    config["Labels"] = _str_map(config.get("Labels"), "Labels")
    config["ExposedPorts"] = _typed(config.get("ExposedPorts"), dict, "ExposedPorts", None)
    config["Volumes"] = _typed(config.get("Volumes"), dict, "Volumes", None)
    if config.get("StopTimeout") is not None:  # omitted when unset, as dockerd does
        config["StopTimeout"] = _typed(config["StopTimeout"], int, "StopTimeout", None)
    if not config["Image"]:
        raise InvalidParameter("config.Image: must not be empty")
    workdir = config["WorkingDir"]
    if workdir and not workdir.startswith("/"):
        raise InvalidParameter(
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path"
        )
    host_config = _typed(body.get("HostConfig"), dict, "HostConfig", {})
    host_config = dict(host_config)
    for key in _HC_INT:
        host_config[key] = _typed(host_config.get(key), int, f"HostConfig.{key}", 0)
    for key in _HC_BOOL:
        host_config[key] = _typed(host_config.get(key), bool, f"HostConfig.{key}", False)
    for key in _HC_LIST:
        host_config[key] = _str_list(
            host_config.get(key), f"HostConfig.{key}", strict=key not in _HC_STR_SLICE
        )
    host_config["PidsLimit"] = _typed(host_config.get("PidsLimit"), int, "HostConfig.PidsLimit", None)
    host_config["CpusetCpus"] = _typed(host_config.get("CpusetCpus"), str, "HostConfig.CpusetCpus", "")
    host_config["CpusetMems"] = _typed(host_config.get("CpusetMems"), str, "HostConfig.CpusetMems", "")
    host_config["NetworkMode"] = _typed(host_config.get("NetworkMode"), str, "HostConfig.NetworkMode", "")
    host_config["Tmpfs"] = _str_map(host_config.get("Tmpfs"), "HostConfig.Tmpfs")
    host_config["Mounts"] = _typed(host_config.get("Mounts"), list, "HostConfig.Mounts", [])
    host_config["Ulimits"] = _typed(host_config.get("Ulimits"), list, "HostConfig.Ulimits", [])
    host_config["RestartPolicy"] = _restart_policy(host_config.get("RestartPolicy"))
    host_config["LogConfig"] = {"Type": "json-file", "Config": {}}
    _check_host_config(host_config)
    return CreateRequest(config, host_config)


def _typed(value: Any, kind: type, field: str, default: Any) -> Any:
    if value is None:
        return default
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise InvalidParameter(f"invalid type for {field}: expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type) -> str:
    return {int: "integer", str: "string", bool: "boolean", dict: "object", list: "array"}.get(
        kind, kind.__name__
    )


def _str_list(value: Any, field: str, strict: bool = False) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) and not strict:
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"invalid type for {field}: expected an array of strings")
    return value


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidParameter(f"invalid type for {field}: expected an object of strings")
    return value


def _restart_policy(value: Any) -> dict[str, Any]:
    policy = _typed(value, dict, "HostConfig.RestartPolicy", {})
    name = _typed(policy.get("Name"), str, "HostConfig.RestartPolicy.Name", "")
    count = _typed(policy.get("MaximumRetryCount"), int, "HostConfig.RestartPolicy.MaximumRetryCount", 0)
    _check_restart_policy(name, count)
    return {"Name": name or "no", "MaximumRetryCount": count if name else 0}


def _check_restart_policy(name: str, count: int) -> None:
    """moby's ValidateRestartPolicy, texts included; an empty name takes any count (pre-v25 clients)."""
    if name not in RESTART_POLICIES:
        raise InvalidParameter(
            f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', "
            "or 'unless-stopped'"
        )
    if name == "on-failure" and count < 0:
        raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
    if name not in ("", "on-failure") and count:
        suffix = " and cannot be negative" if count < 0 else ""
        raise InvalidParameter(
            f"invalid restart policy: maximum retry count can only be used with 'on-failure'{suffix}"
        )


def _check_host_config(hc: dict[str, Any]) -> None:
    if hc["AutoRemove"] and hc["RestartPolicy"]["Name"] not in ("", "no"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    if 0 < hc["Memory"] < 6 * 1024 * 1024:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if (hc["Memory"] < 0 and hc["Memory"] != -1) or hc["NanoCpus"] < 0 or hc["CpuShares"] < 0:
        raise InvalidParameter("invalid resource limit: values cannot be negative")
    if hc["MemorySwap"] > 0 and hc["Memory"] and hc["MemorySwap"] < hc["Memory"]:
        raise InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
    if hc["NanoCpus"] and (hc["CpuPeriod"] or hc["CpuQuota"]):
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    ncpu = os.cpu_count() or 1
    if hc["NanoCpus"] > ncpu * 10**9:
        raise InvalidParameter(
            f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    mode = hc["NetworkMode"]
    if mode not in NETWORK_MODES:
        raise InvalidParameter(f"network {mode} not found")
    for bind in hc["Binds"] or ():
        parse_bind(bind)
    parse_security_opts(hc["SecurityOpt"] or ())


def parse_bind(spec: str) -> tuple[str, str, bool]:
    """``/src:/dst[:ro|rw,...]`` → (source, destination, readonly)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidParameter(f"invalid volume specification: '{spec}'")
    source, dest = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    if not source.startswith("/"):
        raise InvalidParameter(f"invalid volume specification: '{spec}': named volumes are not supported yet")
    if not dest.startswith("/"):
        raise InvalidParameter(f"invalid volume specification: '{spec}': invalid mount config: "
                               f"mount path must be absolute")  # fmt: skip
    if dest == "/":
        raise InvalidParameter(
            f"invalid volume specification: '{spec}': invalid mount config for type \"bind\": "
            "invalid specification: destination can't be '/'"
        )
    unknown = [o for o in options if o not in ("ro", "rw", "z", "Z", "shared", "rshared", "slave", "rslave",
                                               "private", "rprivate", "nocopy")]  # fmt: skip
    if unknown:
        raise InvalidParameter(f"invalid mode: {unknown[0]}")
    return source, dest, "ro" in options


def merge_image_config(config: dict[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the container's config from the image's, with Docker's precedence rules (daemon/create merge)."""
    merged = dict(config)
    if not merged.get("User"):
        merged["User"] = image.get("User") or ""
    env = list(merged.get("Env") or [])
    keys = {e.split("=", 1)[0] for e in env}
    env += [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys]
    merged["Env"] = env
    labels = dict(image.get("Labels") or {})
    # An image must not pre-assign its containers' owner: ``dockyard.owner`` comes from the create body only
    # (stamped by the authorization stage for a confined caller, or an unconfined caller's explicit choice).
    labels.pop(OWNER_LABEL, None)
    labels.update(merged.get("Labels") or {})
    merged["Labels"] = labels
    if not merged.get("Entrypoint"):
        if not merged.get("Cmd"):
            merged["Cmd"] = image.get("Cmd")
        if merged.get("Entrypoint") is None:
            merged["Entrypoint"] = image.get("Entrypoint")
    if not merged.get("WorkingDir"):
        merged["WorkingDir"] = image.get("WorkingDir") or ""
    if not merged.get("StopSignal"):
        merged["StopSignal"] = image.get("StopSignal") or ""
    for key in ("ExposedPorts", "Volumes"):
        union = dict(image.get(key) or {})
        union.update(merged.get(key) or {})
        merged[key] = union or None
    return merged


def command_of(config: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Path and Args (entrypoint + cmd) of the merged config."""
    argv = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    if not argv or not argv[0]:
        raise InvalidParameter("No command specified")
    return argv[0], argv[1:]
