"""The API version window and the version-prefix of request paths (``/v1.47/containers/json``)."""

from __future__ import annotations

import re

from dockyard.errors import InvalidParameter

MIN_VERSION = "1.24"
MAX_VERSION = "1.47"
_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")


def parse(version: str) -> tuple[int, int]:
    """``"1.41"`` → ``(1, 41)``."""
    major, _, minor = version.partition(".")
    return int(major), int(minor)


_MIN = parse(MIN_VERSION)
_MAX = parse(MAX_VERSION)


def split_path(path: str) -> tuple[str, str]:
    """Strip a ``/vX.Y`` prefix; returns (version, rest). Unversioned paths get the newest version."""
    m = _VERSIONED.match(path)
    if m is None:
        return MAX_VERSION, path
    return f"{int(m.group(1))}.{int(m.group(2))}", m.group(3)


def check(version: str) -> None:
    """Raise InvalidParameter (Docker's texts) for a version outside the supported window."""
    v = parse(version)
    if v < _MIN:
        raise InvalidParameter(
            f"client version {version} is too old. Minimum supported API version is {MIN_VERSION}, "
            "please upgrade your client to a newer version"
        )
    if v > _MAX:
        raise InvalidParameter(
            f"client version {version} is too new. Maximum supported API version is {MAX_VERSION}"
        )


def at_least(version: str, wanted: str) -> bool:
    """True when the request's version is ``wanted`` or newer."""
    return parse(version) >= parse(wanted)
