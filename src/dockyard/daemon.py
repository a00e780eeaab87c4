"""Composition root: configuration → store → runtime → engine → api; signals; serve; shutdown.

Containers are supervised by their shim, not by this process: stopping or killing the daemon leaves them
running, and the next start re-adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass

from dockyard import config as configmod
from dockyard.api import version
from dockyard.api.app import App, Router
from dockyard.api.listeners import Listener, open_listeners, serve_socket
from dockyard.api.middleware.stack import Security
from dockyard.api.routers import archive as archive_routes
from dockyard.api.routers import containers as container_routes
from dockyard.api.routers import events as event_routes
from dockyard.api.routers import exec as exec_routes
from dockyard.api.routers import images as image_routes
from dockyard.api.routers import system as system_routes
from dockyard.config import ConfigError, DaemonConfig
from dockyard.engine.archive import ArchiveService
from dockyard.engine.container import ContainerPaths, ContainerRepo
from dockyard.engine.containers import ContainerService
from dockyard.engine.events import EventBus
from dockyard.engine.exec import ExecService
from dockyard.engine.image_lookup import ImageLookupAdapter
from dockyard.engine.images import ImageService
from dockyard.engine.lifecycle import LifecycleDeps
from dockyard.engine.owned import OwnedView, owned_by
from dockyard.engine.stdio import StdioService
from dockyard.engine.system import SystemService
from dockyard.errors import DockyardError
from dockyard.runtime.detect import cgroup_mode, detect_runtime
from dockyard.runtime.mountns import enter_private_mountns
from dockyard.runtime.oci import OciRuntime
from dockyard.store.blobs import BlobStore
from dockyard.store.db import Database
from dockyard.store.images import ImageStore
from dockyard.store.layers import LayerStore
from dockyard.store.rootfs import Rootfs, detect_driver

log = logging.getLogger("dockyard.daemon")


@dataclass
class Engine:
    """The wired use-cases."""

    db: Database
    images: ImageService
    containers: ContainerService
    stdio: StdioService
    system: SystemService
    execs: ExecService
    events: EventBus


async def build_engine(cfg: DaemonConfig) -> Engine:
    """Open the stores, pick runtime and storage driver, wire the use-cases."""
    cfg.data_root.mkdir(parents=True, exist_ok=True, mode=0o710)
    cfg.exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(cfg.data_root / "dockyard.db")
    driver = cfg.storage_driver or await detect_driver(cfg.data_root)
    layers = LayerStore(cfg.data_root, db)
    events = EventBus()
    images = ImageService(ImageStore(db, BlobStore(cfg.data_root / "blobs")), layers, driver)
    runtime_name, binary, wrapper = detect_runtime(cfg.runtime, cfg.exec_root)
    runtime = OciRuntime(wrapper or binary, runtime_name, cfg.exec_root / "runtime")
    deps = LifecycleDeps(
        repo=ContainerRepo(db),
        paths=ContainerPaths(cfg.data_root, cfg.exec_root),
        images=ImageLookupAdapter(images),
        rootfs=Rootfs(cfg.data_root, driver),
        runtime=runtime,
        events=events,
    )
    containers = ContainerService(deps, runtime_name)
    images.users = containers
    images.events = events
    system = SystemService(
        _Counts(containers, images),
        data_root=cfg.data_root,
        runtime_name=runtime_name,
        storage_driver=driver,
        min_api=version.MIN_VERSION,
        max_api=version.MAX_VERSION,
    )
    return Engine(db, images, containers, StdioService(containers), system, ExecService(containers), events)


class _Counts:
    def __init__(self, containers: ContainerService, images: ImageService) -> None:
        self._containers = containers
        self._images = images

    def counts(self, owner: str | None = None) -> dict[str, int]:
        return self._containers.counts(owned_by(owner) if owner is not None else None)

    def image_count(self, owner: str | None = None) -> int:
        return len(self._images.list_images(viewer=owner))


def build_app(engine: Engine, security: Security | None = None) -> App:
    """The HTTP application over the engine, behind the authorization and audit stages when given."""
    router = Router()
    system_routes.register(router, engine.system)
    container_routes.register(router, engine.containers, engine.stdio)
    exec_routes.register(router, engine.execs)
    archive_routes.register(router, ArchiveService(engine.containers.d))
    image_routes.register(router, engine.images)
    event_routes.register(router, engine.events)
    return App(router, security.stage if security is not None else None)


def _owned_view(engine: Engine) -> OwnedView:
    """The engine's objects as owner isolation sees them: containers, execs (by container), images."""
    return OwnedView(engine.containers.repo, engine.execs, engine.images)


async def run(cfg: DaemonConfig) -> None:
    """Start every component, serve until SIGTERM/SIGINT, then shut down cleanly."""
    listeners = _listen(cfg)
    engine = await build_engine(cfg)
    await engine.containers.lifecycle.restore()
    security = await Security.start(cfg, _owned_view(engine))
    app = build_app(engine, security)
    servers = [await serve_socket(app, lst.sock, lst.tls) for lst in listeners]
    if cfg.pidfile is not None:
        cfg.pidfile.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, security.reload)
    log.info("dockyardd ready on %s (runtime %s)", ", ".join(cfg.hosts), engine.containers.runtime_name)
    await stop.wait()
    log.info("shutting down; containers keep running under their shims")
    for server in servers:
        server.close()
    await engine.containers.lifecycle.shutdown()
    await security.close()
    engine.db.close()
    if cfg.pidfile is not None:
        with contextlib.suppress(OSError):
            cfg.pidfile.unlink()


def _listen(cfg: DaemonConfig) -> list[Listener]:
    # Before the engine starts: a bad TLS file or a taken port fails the start at once.
    return open_listeners(cfg)


def prepare_host(cfg: DaemonConfig) -> None:
    """Before any thread exists: on a hybrid-cgroup host, move into the mount namespace where crun works.

    With runc forced (``--runtime runc``), or without crun, the daemon stays in the host's namespace.
    """
    tools = shutil.which("crun") and shutil.which("unshare")
    if cgroup_mode() != "hybrid" or cfg.runtime == "runc" or not tools:
        return
    cfg.exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    enter_private_mountns(cfg.exec_root)
    log.info("hybrid cgroups: running in a private mount namespace without the cgroup v2 mount, for crun")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``dockyardd``."""
    try:
        cfg = configmod.load(argv)
    except ConfigError as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    logging.basicConfig(
        level=configmod.log_level(cfg),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        prepare_host(cfg)
        asyncio.run(run(cfg))
    except (ConfigError, DockyardError, OSError) as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
