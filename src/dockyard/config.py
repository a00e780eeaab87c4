"""Daemon configuration from dockerd-style flags and ``daemon.json``, validated once.

Flags win over the file for the same setting (dockerd refuses the conflict; we are more forgiving and say so
in the log). Unknown keys in the file are an error, as in dockerd.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dockyard import __version__

DEFAULT_SOCKET = "unix:///var/run/dockyard.sock"

_FILE_KEYS = {
    "hosts": "hosts",
    "data-root": "data_root",
    "exec-root": "exec_root",
    "pidfile": "pidfile",
    "group": "group",
    "log-level": "log_level",
    "default-runtime": "runtime",
    "storage-driver": "storage_driver",
    "tls": "tls",
    "tlsverify": "tlsverify",
    "tlscacert": "tlscacert",
    "tlscert": "tlscert",
    "tlskey": "tlskey",
    "policy": "policy",
    "audit-log": "audit_log",
}


class ConfigError(Exception):
    """The configuration is invalid; the daemon must not start."""


@dataclass(frozen=True)
class DaemonConfig:
    """Everything the daemon is told at start."""

    hosts: tuple[str, ...] = (DEFAULT_SOCKET,)
    data_root: Path = Path("/var/lib/dockyard")
    exec_root: Path = Path("/run/dockyard")
    pidfile: Path | None = None
    group: str = "docker"
    log_level: str = "info"
    runtime: str | None = None
    storage_driver: str | None = None
    tls: bool = False
    tlsverify: bool = False
    tlscacert: Path | None = None
    tlscert: Path | None = None
    tlskey: Path | None = None
    insecure_tcp: bool = False
    policy: Path | None = None
    audit_log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    """The dockerd-compatible flag set."""
    p = argparse.ArgumentParser(
        prog="dockyardd", description="dockyard daemon: the Docker Engine API in Python"
    )
    p.add_argument(
        "-H", "--host", action="append", dest="hosts", help="socket(s) to listen on (unix://, fd://)"
    )
    p.add_argument("--data-root", type=Path)
    p.add_argument("--exec-root", type=Path)
    p.add_argument("-p", "--pidfile", type=Path)
    p.add_argument("-G", "--group")
    p.add_argument("--config-file", type=Path, default=None)
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warn", "error", "fatal"])
    p.add_argument("--runtime", "--default-runtime", dest="runtime", choices=["crun", "runc"])
    p.add_argument("-s", "--storage-driver", choices=["overlay2", "vfs"])
    p.add_argument("--tls", action="store_true", default=None)
    p.add_argument("--tlsverify", action="store_true", default=None)
    p.add_argument("--tlscacert", type=Path)
    p.add_argument("--tlscert", type=Path)
    p.add_argument("--tlskey", type=Path)
    p.add_argument(
        "--insecure-tcp", action="store_true", default=None, help="allow tcp:// without --tlsverify"
    )
    p.add_argument("--policy", type=Path)
    p.add_argument("--audit-log", type=Path)
    p.add_argument("-v", "--version", action="version", version=f"dockyardd {__version__}")
    return p


def load(argv: list[str] | None = None) -> DaemonConfig:
    """Parse flags, merge ``daemon.json``, validate."""
    args = build_parser().parse_args(argv)
    cfg = DaemonConfig()
    cfg = _merge_file(cfg, args.config_file)
    for name in (
        "hosts", "data_root", "exec_root", "pidfile", "group", "log_level", "runtime", "storage_driver",
        "tls", "tlsverify", "tlscacert", "tlscert", "tlskey", "insecure_tcp", "policy", "audit_log",
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            changes: dict[str, Any] = {name: tuple(value) if name == "hosts" else value}
            cfg = replace(cfg, **changes)
    return validate(cfg)


def _merge_file(cfg: DaemonConfig, path: Path | None) -> DaemonConfig:
    if path is None:
        default = Path("/etc/dockyard/daemon.json")
        if not default.exists():
            return cfg
        path = default
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unable to configure the daemon with file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"unable to configure the daemon with file {path}: not a JSON object")
    unknown = sorted(set(data) - set(_FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"the following directives don't match any configuration option: {', '.join(unknown)}"
        )
    changes: dict[str, Any] = {}
    for key, value in data.items():
        attr = _FILE_KEYS[key]
        if attr == "hosts":
            value = tuple(value)
        elif attr in {
            "data_root",
            "exec_root",
            "pidfile",
            "tlscacert",
            "tlscert",
            "tlskey",
            "policy",
            "audit_log",
        }:
            value = Path(value)
        changes[attr] = value
    return replace(cfg, **changes)


_PATH_FIELDS = ("data_root", "exec_root", "pidfile", "tlscacert", "tlscert", "tlskey", "policy", "audit_log")


def _absolute(cfg: DaemonConfig) -> DaemonConfig:
    """Relative paths are taken from the directory the daemon was started in (it later works from ``/``)."""
    changes: dict[str, Any] = {}
    for name in _PATH_FIELDS:
        value = getattr(cfg, name)
        if (
            isinstance(value, Path)
            and not value.is_absolute()
            and not (name == "audit_log" and str(value) == "off")
        ):
            changes[name] = value.absolute()
    return replace(cfg, **changes) if changes else cfg


def validate(cfg: DaemonConfig) -> DaemonConfig:
    """Check the combination of settings; raise ConfigError with a clear text."""
    cfg = _absolute(cfg)
    for host in cfg.hosts:
        scheme = host.split("://", 1)[0] if "://" in host else ""
        if scheme not in ("unix", "fd", "tcp"):
            raise ConfigError(f"invalid host {host!r}: use unix://PATH, fd:// or tcp://ADDR:PORT")
        if scheme == "tcp" and not (cfg.tlsverify or cfg.insecure_tcp):
            raise ConfigError(
                f"refusing to listen on {host} without --tlsverify: anyone who reaches it controls this "
                "host. Pass --tlsverify with --tlscacert/--tlscert/--tlskey, or --insecure-tcp if you "
                "really mean it."
            )
    if cfg.log_level not in ("debug", "info", "warn", "error", "fatal"):
        raise ConfigError(f"invalid log level {cfg.log_level!r}")
    if cfg.tls or cfg.tlsverify:
        defaulted = _default_tls_files(cfg)
        _validate_tls_files(defaulted, cfg)
        cfg = defaulted
    return cfg


def _default_tls_files(cfg: DaemonConfig) -> DaemonConfig:
    """dockerd's defaults for the TLS files not given: ``ca.pem``, ``cert.pem`` and ``key.pem`` in
    ``$DOCKER_CERT_PATH``, else in the docker CLI's configuration directory (``$DOCKER_CONFIG``, else
    ``~/.docker``)."""
    # expanduser, not Path.home(): without $HOME or a passwd entry it leaves "~" (named in the error) instead
    # of raising
    home = os.path.expanduser("~/.docker")
    where = os.environ.get("DOCKER_CERT_PATH") or os.environ.get("DOCKER_CONFIG") or home
    d = Path(where).absolute()
    return replace(cfg, tlscacert=cfg.tlscacert or d / "ca.pem", tlscert=cfg.tlscert or d / "cert.pem",
                   tlskey=cfg.tlskey or d / "key.pem")  # fmt: skip


def _validate_tls_files(cfg: DaemonConfig, given: DaemonConfig) -> None:
    """Each TLS file must be readable, so a typo fails the start with its name, not an SSL error; a default
    that is missing says it was one."""
    needed = {"--tlscert": (cfg.tlscert, given.tlscert), "--tlskey": (cfg.tlskey, given.tlskey)}
    if cfg.tlsverify:
        needed["--tlscacert"] = (cfg.tlscacert, given.tlscacert)
    for flag, (path, named) in needed.items():
        assert path is not None
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            how = "" if named is not None else f" (the default: pass {flag} or set DOCKER_CERT_PATH)"
            raise ConfigError(f"could not read {flag} file {str(path)!r}{how}: {exc.strerror}") from None


def log_level(cfg: DaemonConfig) -> int:
    """The logging module's level for the configured name."""
    return {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}.get(
        cfg.log_level, logging.ERROR
    )
