"""``--security-opt`` parsing and seccomp profiles: Docker's profile format to OCI ``linux.seccomp``.

Docker profiles (``seccomp_default.json`` here, or a user's profile that the CLI sends as JSON text) carry
rules that apply only on some architectures, kernels or capability sets. :func:`to_oci` filters them the way
moby's ``setupSeccomp`` does, for the host architecture and the container's bounding capabilities, and
leaves the result for the OCI runtime (runc/crun compile it with libseccomp). No Python library reads
Docker's profile format (libseccomp's bindings compile filters, which the runtime does anyway), so this is a
small pure converter. The default profile is dockyard's own data file with the policy of Docker's default
profile (moby, Apache-2.0; see NOTICE).
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from dockyard.errors import InvalidParameter

__all__ = [
    "SecurityOptions",
    "container_seccomp",
    "default_profile",
    "kernel_version",
    "load_profile",
    "native_arch",
    "parse_security_opts",
    "to_oci",
]

UNCONFINED = "unconfined"
BUILTIN = "builtin"

# platform.machine() → the arch names Docker profiles use in includes/excludes.
_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "x86",
    "i686": "x86",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
}
# Docker arch name → libseccomp's, to pick the host's entry of a profile's archMap.
_ARCH_TO_SCMP = {
    "amd64": "SCMP_ARCH_X86_64",
    "arm64": "SCMP_ARCH_AARCH64",
    "x86": "SCMP_ARCH_X86",
    "arm": "SCMP_ARCH_ARM",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
    "mips64": "SCMP_ARCH_MIPS64",
}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class SecurityOptions:
    """HostConfig.SecurityOpt, parsed. ``seccomp_profile`` is "" (daemon default), ``unconfined``,
    ``builtin`` or a profile's JSON text."""

    no_new_privileges: bool = False
    seccomp_profile: str = ""
    apparmor_profile: str = ""
    label: tuple[str, ...] = ()


def parse_security_opts(opts: Sequence[str]) -> SecurityOptions:
    """Parse ``--security-opt`` values as moby's ``parseSecurityOpt`` does, error texts included.

    Raises:
        InvalidParameter: a value without ``=``/``:``, an unknown key, or a non-boolean
            ``no-new-privileges``.
    """
    nnp, seccomp, apparmor, label = False, "", "", []
    for opt in opts:
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":
            label.append("disable")
            continue
        sep = "=" if "=" in opt else ":"
        key, found, value = opt.partition(sep)
        if not found:
            raise InvalidParameter(f"invalid --security-opt 1: {_quote(opt)}")
        if key == "label":
            label.append(value)
        elif key == "apparmor":
            apparmor = value
        elif key == "seccomp":
            seccomp = value
        elif key == "no-new-privileges" and value in _TRUE + _FALSE:
            nnp = value in _TRUE
        else:
            raise InvalidParameter(f"invalid --security-opt 2: {_quote(opt)}")
    return SecurityOptions(nnp, seccomp, apparmor, tuple(label))


def _quote(text: str) -> str:
    # Go's %q for the printable text these options are.
    return json.dumps(text, ensure_ascii=False)


def container_seccomp(
    opts: SecurityOptions, privileged: bool, capabilities: Sequence[str]
) -> dict[str, Any] | None:
    """The OCI seccomp section for a container, or None for none (moby's ``WithSeccomp``).

    Privileged and ``seccomp=unconfined`` containers run without a filter; ``seccomp=<json>`` uses
    that profile; otherwise (or with ``builtin``) the default profile applies.

    Raises:
        InvalidParameter: the custom profile is not valid.
    """
    if privileged or opts.seccomp_profile == UNCONFINED:
        return None
    if opts.seccomp_profile and opts.seccomp_profile != BUILTIN:
        return load_profile(opts.seccomp_profile, capabilities)
    return to_oci(default_profile(), capabilities)


@functools.cache
def _default_text() -> str:
    return resources.files("dockyard.engine").joinpath("seccomp_default.json").read_text()


def default_profile() -> dict[str, Any]:
    """The default profile in Docker's format (a fresh copy each call)."""
    profile: dict[str, Any] = json.loads(_default_text())
    return profile


def load_profile(text: str, capabilities: Sequence[str]) -> dict[str, Any] | None:
    """Decode a Docker-format profile and convert it with :func:`to_oci`.

    Raises:
        InvalidParameter: the text is not a JSON profile, with moby's message prefix.
    """
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise InvalidParameter(f"decoding seccomp profile failed: {exc}") from exc
    if not isinstance(profile, dict):
        raise InvalidParameter("decoding seccomp profile failed: the profile is not a JSON object")
    return to_oci(profile, capabilities)


def to_oci(
    profile: Mapping[str, Any],
    capabilities: Sequence[str],
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """Convert a Docker-format profile to OCI ``linux.seccomp`` for one container.

    Args:
        profile: the profile (``defaultAction``, ``defaultErrnoRet``, ``architectures`` or ``archMap``,
            ``flags``, ``syscalls`` with ``names``/``name``, ``action``, ``errnoRet``, ``args``,
            ``includes``/``excludes`` by ``arches``, ``caps`` and ``minKernel``).
        capabilities: the container's bounding set (``CAP_`` names).
        arch: Docker's name of the architecture (default: this host's).
        kernel: (major, minor) of the kernel (default: this host's).

    Returns:
        The OCI section, or None when the profile has neither a default action nor rules (moby's
        "seccomp disabled").

    Raises:
        InvalidParameter: contradictory or malformed fields, with moby's texts where it has them.
    """
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidParameter(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    arch = arch or native_arch()
    kernel = kernel or kernel_version()
    caps = set(capabilities)
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "")}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = _architectures(profile, arch)
    if arches:
        out["architectures"] = arches
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    rules = _list(profile.get("syscalls"), "syscalls")
    out["syscalls"] = [_rule(r) for r in rules if _applies(r, arch, caps, kernel)]
    return out


def _architectures(profile: Mapping[str, Any], arch: str) -> list[str]:
    arches = list(_list(profile.get("architectures"), "architectures"))
    wanted = _ARCH_TO_SCMP.get(arch)
    for entry in _list(profile.get("archMap"), "archMap"):
        if isinstance(entry, dict) and entry.get("architecture") == wanted:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    return arches


def _applies(rule: Any, arch: str, caps: set[str], kernel: tuple[int, int]) -> bool:
    if not isinstance(rule, dict):
        raise InvalidParameter("decoding seccomp profile failed: a syscalls entry is not an object")
    excludes, includes = rule.get("excludes") or {}, rule.get("includes") or {}
    if not isinstance(excludes, dict) or not isinstance(includes, dict):
        raise InvalidParameter("decoding seccomp profile failed: includes/excludes must be objects")
    if arch in (excludes.get("arches") or ()):
        return False
    if any(c in caps for c in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and kernel >= _parse_kernel(excludes["minKernel"]):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not all(c in caps for c in includes.get("caps") or ()):
        return False
    return not (includes.get("minKernel") and kernel < _parse_kernel(includes["minKernel"]))


def _rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    names = list(_list(rule.get("names"), "names"))
    if rule.get("name"):
        if names:
            raise InvalidParameter("use either 'name' or 'names'")
        names = [rule["name"]]
    out: dict[str, Any] = {"names": names, "action": rule.get("action", "")}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = rule["errnoRet"]
    if rule.get("args"):
        out["args"] = [_arg(a) for a in rule["args"]]
    return out


def _arg(arg: Any) -> dict[str, Any]:
    if not isinstance(arg, dict):
        raise InvalidParameter("decoding seccomp profile failed: an args entry is not an object")
    out = {"index": arg.get("index", 0), "value": arg.get("value", 0), "op": arg.get("op", "")}
    if arg.get("valueTwo"):
        out["valueTwo"] = arg["valueTwo"]
    return out


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidParameter(f"decoding seccomp profile failed: {field} must be an array")
    return value


def native_arch() -> str:
    """This host's architecture under Docker's name (``amd64``, ``arm64``, ...)."""
    machine = platform.machine()
    return _MACHINE_TO_ARCH.get(machine, machine)


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    return _parse_kernel(platform.release())


def _parse_kernel(text: Any) -> tuple[int, int]:
    parts = str(text).replace("-", ".").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError) as exc:
        raise InvalidParameter(f"invalid kernel version: {text!r}") from exc
