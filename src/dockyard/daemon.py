"""Composition root: configuration → store → runtime → engine → api; signals; serve; shutdown.

Containers are supervised by their shim, not by this process: stopping or killing the daemon leaves them
running, and the next start re-adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from dockyard import config as configmod
from dockyard.api import version
from dockyard.api.app import App, Router
from dockyard.api.listeners import bind_unix, serve_socket, systemd_sockets
from dockyard.api.routers import system as system_routes
from dockyard.config import ConfigError, DaemonConfig
from dockyard.engine.system import SystemService

log = logging.getLogger("dockyard.daemon")


class _NoCounts:
    def counts(self) -> dict[str, int]:
        return {"total": 0, "running": 0, "paused": 0, "stopped": 0}

    def image_count(self) -> int:
        return 0


async def run(cfg: DaemonConfig) -> None:
    """Start every component, serve until SIGTERM/SIGINT, then shut down cleanly."""
    cfg.data_root.mkdir(parents=True, exist_ok=True, mode=0o710)
    cfg.exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    router = Router()
    system = SystemService(
        _NoCounts(),
        data_root=cfg.data_root,
        runtime_name="runc",
        storage_driver="overlay2",
        min_api=version.MIN_VERSION,
        max_api=version.MAX_VERSION,
    )
    system_routes.register(router, system)
    app = App(router)
    servers = [await serve_socket(app, sock) for sock in _listen(cfg)]
    if cfg.pidfile is not None:
        cfg.pidfile.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("dockyardd %s listening on %s", "ready", ", ".join(cfg.hosts))
    await stop.wait()
    log.info("shutting down; containers keep running under their shims")
    for server in servers:
        server.close()
    if cfg.pidfile is not None:
        with contextlib.suppress(OSError):
            cfg.pidfile.unlink()


def _listen(cfg: DaemonConfig) -> list[object]:
    socks: list[object] = []
    for host in cfg.hosts:
        scheme, _, rest = host.partition("://")
        if scheme == "unix":
            socks.append(bind_unix(Path(rest), cfg.group))
        elif scheme == "fd":
            passed = systemd_sockets()
            if not passed:
                raise ConfigError("fd:// given but no sockets were passed by systemd (LISTEN_FDS)")
            socks.extend(passed)
        else:
            raise ConfigError(f"{host}: tcp listeners are not supported yet")
    return socks


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``dockyardd``."""
    try:
        cfg = configmod.load(argv)
    except ConfigError as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    logging.basicConfig(
        level=configmod.log_level(cfg), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        asyncio.run(run(cfg))
    except ConfigError as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
