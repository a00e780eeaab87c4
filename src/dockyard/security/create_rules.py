"""Constraints on ``ContainerCreate`` bodies (and image pulls) for a policy rule: pure checks.

Each check returns a reason text (empty when the body passes). The body is the very object the engine will
use (the authorization middleware re-serializes it), so a check can never see one value while the engine
sees another. Field names are matched case-insensitively on purpose: Go's JSON decoder (dockerd, and any
future engine change that imitates it) treats ``privileged`` as ``Privileged``, so every spelling must pass.
Anything with an unexpected type is refused rather than guessed at (``"Privileged": "true"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.errors import DockyardError
from dockyard.store.reference import is_full_id, parse_normalized

_KEYS = {"allow_privileged", "allow_host_namespaces", "allow_devices", "cap_add", "bind_roots", "images"}
_NAMESPACE_MODES = ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
_DEVICE_FIELDS = ("Devices", "DeviceRequests", "DeviceCgroupRules")
_SAFE_MOUNT_TYPES = ("volume", "tmpfs")


@dataclass(frozen=True)
class CreateRules:
    """What a rule lets a caller put in a create body. Defaults are the restrictive ones."""

    allow_privileged: bool = False
    allow_host_namespaces: bool = False
    allow_devices: bool = False
    cap_add: frozenset[str] = frozenset()
    bind_roots: tuple[str, ...] = ()
    images: frozenset[str] | None = None  # normalized repositories; None means any image


def parse_create_rules(
    raw: Mapping[str, Any], where: str, error: Callable[[str], DockyardError]
) -> CreateRules:
    """Validate a rule's ``create`` table.

    Args:
        raw: the table.
        where: the location, for error messages.
        error: the exception type to raise.

    Returns:
        The constraints.
    """
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    flags = {}
    for key in ("allow_privileged", "allow_host_namespaces", "allow_devices"):
        if not isinstance(raw.get(key, False), bool):
            raise error(f"{where}: {key} must be true or false")
        flags[key] = bool(raw.get(key, False))
    lists = {}
    for key in ("cap_add", "bind_roots", "images"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise error(f"{where}: {key} must be an array of strings")
        lists[key] = value
    for root in lists["bind_roots"]:
        if not root.startswith("/"):
            raise error(f"{where}: bind_roots entry {root!r} must be an absolute path")
    try:
        images = frozenset(parse_normalized(i).name for i in lists["images"]) if "images" in raw else None
    except DockyardError as exc:
        raise error(f"{where}: images: {exc.message}") from None
    return CreateRules(
        **flags,
        cap_add=frozenset(_cap(c) for c in lists["cap_add"]),
        bind_roots=tuple(lists["bind_roots"]),
        images=images,
    )


def check_create(rules: CreateRules, body: Any) -> str:
    """Why a create body breaks the rules ("" when it does not)."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    hc_values = _fields(body, "HostConfig")
    if len(hc_values) > 1:
        return "HostConfig is given more than once"
    hc = hc_values[0] if hc_values else None
    if hc is None:
        hc = {}
    if not isinstance(hc, dict):
        return "HostConfig must be an object"
    for check in (_privileged, _namespaces, _caps, _devices, _binds, _mounts, _misc):
        reason = check(rules, hc)
        if reason:
            return reason
    return _image(rules, body)


def check_image_pull(rules: CreateRules, query: Mapping[str, list[str]]) -> str:
    """Why an ``ImageCreate`` (pull) names an image outside the allowed repositories."""
    if rules.images is None:
        return ""
    for ref in query.get("fromImage", []):
        reason = _image_allowed(rules.images, ref)
        if reason:
            return reason
    return ""


def _fields(obj: Mapping[str, Any], name: str) -> list[Any]:
    """Every value whose key spells ``name`` in any letter case (absent and null values left out)."""
    folded = name.casefold()
    return [v for k, v in obj.items() if k.casefold() == folded and v is not None]


def _privileged(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    if rules.allow_privileged:
        return ""
    if any(v is not False for v in _fields(hc, "Privileged")):
        return "privileged containers are not allowed"
    return ""


def _namespaces(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    if rules.allow_host_namespaces:
        return ""
    for key in _NAMESPACE_MODES:
        for value in _fields(hc, key):
            if not isinstance(value, str):
                return f"{key} must be a string"
            mode = value.strip().lower()
            if mode == "host" or mode.startswith("container:") or mode.startswith("ns:"):
                return f"{key} {value!r} is not allowed (host and shared namespaces are refused)"
    return ""


def _caps(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    for value in _fields(hc, "CapAdd"):
        caps = [value] if isinstance(value, str) else value
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            return "CapAdd must be an array of strings"
        for cap in caps:
            if _cap(cap) not in rules.cap_add and "ALL" not in rules.cap_add:
                return f"capability {cap} may not be added"
    return ""


def _devices(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    if rules.allow_devices:
        return ""
    for key in _DEVICE_FIELDS:
        if any(v != [] for v in _fields(hc, key)):
            return f"{key} are not allowed"
    return ""


def _binds(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    for value in _fields(hc, "Binds"):
        if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
            return "Binds must be an array of strings"
        for bind in value:
            source = bind.split(":", 1)[0]
            if source.startswith("/") or not source:
                reason = _source_allowed(rules, source)
                if reason:
                    return reason
    return ""


def _mounts(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    for value in _fields(hc, "Mounts"):
        if not isinstance(value, list):
            return "Mounts must be an array"
        for mount in value:
            if not isinstance(mount, dict):
                return "each of Mounts must be an object"
            types = _fields(mount, "Type")
            if len(types) != 1 or not isinstance(types[0], str):
                return "each of Mounts needs exactly one Type"
            kind = types[0].lower()
            if kind in _SAFE_MOUNT_TYPES:
                continue
            if kind != "bind":
                return f"mount type {types[0]!r} is not allowed"
            sources = _fields(mount, "Source")
            if len(sources) != 1 or not isinstance(sources[0], str):
                return "a bind mount needs exactly one Source"
            reason = _source_allowed(rules, sources[0])
            if reason:
                return reason
    return ""


def _misc(rules: CreateRules, hc: Mapping[str, Any]) -> str:
    if any(v not in ([], "") for v in _fields(hc, "VolumesFrom")):
        return "VolumesFrom is not allowed (it mounts another container's volumes)"
    if any(v != "" for v in _fields(hc, "CgroupParent")):
        return "CgroupParent is not allowed"
    for value in _fields(hc, "SecurityOpt"):
        if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
            return "SecurityOpt must be an array of strings"
        for opt in value:
            low = opt.lower().replace(":", "=")
            if "unconfined" in low or low in ("label=disable", "no-new-privileges=false"):
                return f"security option {opt!r} is not allowed"
    return ""


def _source_allowed(rules: CreateRules, source: str) -> str:
    if not source.startswith("/"):
        return f"bind source {source!r} must be an absolute path"
    # Resolve on the host, as the runtime will: a symlink inside an allowed root may point anywhere.
    real = os.path.realpath(source)
    for root in rules.bind_roots:
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
            return ""
    roots = ", ".join(rules.bind_roots) or "none"
    return f"bind mount of {source} is not allowed (allowed roots: {roots})"


def _image(rules: CreateRules, body: Mapping[str, Any]) -> str:
    if rules.images is None:
        return ""
    values = _fields(body, "Image")
    if not values:
        return "an image is required"
    for value in values:
        if not isinstance(value, str):
            return "Image must be a string"
        reason = _image_allowed(rules.images, value)
        if reason:
            return reason
    return ""


def _image_allowed(allowed: frozenset[str], ref: str) -> str:
    if is_full_id(ref) or ref.startswith("sha256:"):
        return f"image {ref} must be named by repository (allowed: {', '.join(sorted(allowed))})"
    try:
        name = parse_normalized(ref).name
    except DockyardError:
        return f"image reference {ref!r} is invalid"
    if name not in allowed:
        return f"image {ref} is not from an allowed repository ({', '.join(sorted(allowed))})"
    return ""


def _cap(name: str) -> str:
    return name.strip().upper().removeprefix("CAP_")
