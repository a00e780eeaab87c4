"""System endpoints: ``/_ping``, ``/version``, ``/info``."""

from __future__ import annotations

from dockyard.api.app import Router
from dockyard.api.messages import Request, Response
from dockyard.api.params import confined_owner, json_response
from dockyard.engine.system import SystemService

_PING_HEADERS = [
    ("Builder-Version", "1"),
    ("Cache-Control", "no-cache, no-store, must-revalidate"),
    ("Pragma", "no-cache"),
]
_PING = Response(200, b"OK", "text/plain; charset=utf-8", _PING_HEADERS)
_PING_HEAD = Response(200, b"", "text/plain; charset=utf-8", _PING_HEADERS)


def register(router: Router, system: SystemService) -> None:
    """Add the system routes."""

    def system_ping(req: Request) -> Response:
        return _PING_HEAD if req.method == "HEAD" else _PING

    def system_version(req: Request) -> Response:
        return json_response(system.version())

    def system_info(req: Request) -> Response:
        # A caller confined to its own objects (owner isolation) counts only what it can list.
        return json_response(system.info(confined_owner(req)))

    router.add("GET", "/_ping", "SystemPing", system_ping)
    router.add("HEAD", "/_ping", "SystemPingHead", system_ping)
    router.add("GET", "/version", "SystemVersion", system_version)
    router.add("GET", "/info", "SystemInfo", system_info)
