"""Dockerfile instructions applied to an image config (``docker import -c``, ``docker commit -c``).

Lines are parsed by the ``dockerfile`` package, the official Go Dockerfile parser built as a wheel, so
quoting, JSON forms and the legacy ``ENV k v`` form behave exactly as in Docker; this module only
applies the parsed instructions. Error texts follow dockerd's.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from dockyard.errors import InvalidParameter

__all__ = ["VALID_CHANGES", "apply_changes"]

VALID_CHANGES = frozenset(
    {"cmd", "entrypoint", "env", "expose", "label", "onbuild", "stopsignal", "user", "volume", "workdir"}
)
_ONE_ARG = {"user", "workdir", "stopsignal"}


def _unquote(word: str) -> str:
    if not any(c in word for c in "\"'\\"):
        return word
    try:
        return " ".join(shlex.split(word))
    except ValueError:
        return word


def _parse(line: str) -> Any:
    # Imported here: the parser is Go, and loading it starts the Go runtime's threads; the daemon must
    # still be single-threaded when it joins its mount namespace at start-up.
    import dockerfile

    try:
        commands = dockerfile.parse_string(line)
    except dockerfile.GoParseError as exc:
        raise InvalidParameter(str(exc)) from exc
    if len(commands) != 1:
        raise InvalidParameter(f"invalid change {line!r}")
    return commands[0]


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile-instruction ``changes`` to an image ``config`` (Docker's ``Config`` keys).

    Args:
        config: the starting config; not modified.
        changes: lines such as ``CMD ["sh"]`` or ``ENV A=1``.

    Returns:
        The new config.

    Raises:
        InvalidParameter: an unsupported instruction (``x is not a valid change command``) or bad arguments.
    """
    result = dict(config)
    cmd_set = False
    for line in changes:
        if not line.strip():
            continue
        command = _parse(line)
        name = command.cmd.lower()
        if name not in VALID_CHANGES:
            raise InvalidParameter(f"{name} is not a valid change command")
        _check_arity(name, command.value)
        if name == "cmd":
            cmd_set = True
        elif name == "entrypoint" and not cmd_set:
            result["Cmd"] = None
        _APPLY[name](result, command)
    return result


def _check_arity(name: str, values: tuple[str, ...]) -> None:
    upper = name.upper()
    if name in _ONE_ARG and len(values) != 1:
        raise InvalidParameter(f"{upper} requires exactly one argument")
    if name in ("expose", "label", "volume", "onbuild", "env") and not values:
        raise InvalidParameter(f"{upper} requires at least one argument")


def _command_form(command: Any) -> list[str]:
    if command.json:
        return list(command.value)
    return ["/bin/sh", "-c", " ".join(command.value)]


def _set_cmd(config: dict[str, Any], command: Any) -> None:
    config["Cmd"] = _command_form(command)


def _set_entrypoint(config: dict[str, Any], command: Any) -> None:
    config["Entrypoint"] = _command_form(command)


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(_unquote(values[i]), _unquote(values[i + 1])) for i in range(0, len(values) - 1, 2)]


def _set_env(config: dict[str, Any], command: Any) -> None:
    env = list(config.get("Env") or [])
    for key, value in _pairs(command.value):
        env = [e for e in env if e.split("=", 1)[0] != key]
        env.append(f"{key}={value}")
    config["Env"] = env


def _set_label(config: dict[str, Any], command: Any) -> None:
    labels = dict(config.get("Labels") or {})
    labels.update(_pairs(command.value))
    config["Labels"] = labels


def _set_expose(config: dict[str, Any], command: Any) -> None:
    ports = dict(config.get("ExposedPorts") or {})
    for spec in command.value:
        port, _, proto = spec.partition("/")
        if not _valid_port(port):
            raise InvalidParameter(f"Invalid containerPort: {port}")
        ports[f"{port}/{(proto or 'tcp').lower()}"] = {}
    config["ExposedPorts"] = ports


def _valid_port(port: str) -> bool:
    low, _, high = port.partition("-")
    return all(p.isdigit() and 0 < int(p) < 65536 for p in (low, high or low))


def _set_volume(config: dict[str, Any], command: Any) -> None:
    volumes = dict(config.get("Volumes") or {})
    for path in command.value:
        if not path.strip():
            raise InvalidParameter("VOLUME specified can not be an empty string")
        volumes[path] = {}
    config["Volumes"] = volumes


def _set_onbuild(config: dict[str, Any], command: Any) -> None:
    trigger = command.original.strip()[len("ONBUILD") :].strip()
    sub = (command.sub_cmd or "").upper()
    if sub in ("ONBUILD", "FROM", "MAINTAINER"):
        raise InvalidParameter(f"{sub} isn't allowed as an ONBUILD trigger")
    config["OnBuild"] = [*(config.get("OnBuild") or []), trigger]


def _set_user(config: dict[str, Any], command: Any) -> None:
    config["User"] = command.value[0]


def _set_workdir(config: dict[str, Any], command: Any) -> None:
    path = command.value[0]
    if not path.startswith("/"):
        path = posixpath.join(config.get("WorkingDir") or "/", path)
    config["WorkingDir"] = posixpath.normpath(path)


def _set_stopsignal(config: dict[str, Any], command: Any) -> None:
    config["StopSignal"] = command.value[0]


_APPLY = {
    "cmd": _set_cmd,
    "entrypoint": _set_entrypoint,
    "env": _set_env,
    "label": _set_label,
    "expose": _set_expose,
    "volume": _set_volume,
    "onbuild": _set_onbuild,
    "user": _set_user,
    "workdir": _set_workdir,
    "stopsignal": _set_stopsignal,
}
