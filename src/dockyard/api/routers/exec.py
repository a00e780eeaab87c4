"""Exec endpoints: ``ContainerExec``, ``ExecStart`` (a hijack, as attach), ``ExecResize``, ``ExecInspect``."""

from __future__ import annotations

import asyncio

from dockyard.api import streams
from dockyard.api.app import Router
from dockyard.api.messages import Request, Response
from dockyard.api.params import json_body, json_response, query_int
from dockyard.engine.exec import ExecService

_EMPTY_OK = Response(200, b"", None)


def _body_in_stream(req: Request) -> int:
    """Length of a body that the HTTP layer left on the upgraded stream (0: the body was parsed)."""
    if req.body or "upgrade" not in req.headers.get("connection", "").lower():
        return 0
    try:
        return max(int(req.headers.get("content-length", "0")), 0)
    except ValueError:
        return 0


def register(router: Router, execs: ExecService) -> None:
    """Add the exec routes."""

    def container_exec(req: Request) -> Response:
        return json_response(execs.create(req.params["id"], json_body(req)), 201)

    async def exec_start(req: Request) -> Response | None:
        # With "Upgrade: tcp" the body arrives on the raw stream, after the hijack (see api/http.py).
        in_stream = _body_in_stream(req)
        body = {} if in_stream else json_body(req, allow_empty=True)
        e = execs.claim(req.params["id"])  # 404/409 as plain responses, before the hijack
        if body.get("Detach"):
            await execs.start_detached(e)
            return _EMPTY_OK
        raw = req.hijack(streams.content_type(e.config.tty, req.version))
        if in_stream:
            try:
                await raw.reader.readexactly(in_stream)
            except asyncio.IncompleteReadError:
                raw.close()
                return None
        stdio = await execs.start_attached(e)
        await streams.pump_attach(raw, stdio, e.config.tty, e.config.attach_stdin, True)
        return None

    async def exec_resize(req: Request) -> Response:
        await execs.resize(req.params["id"], query_int(req, "h", 0) or 0, query_int(req, "w", 0) or 0)
        return Response(200, b"", "text/plain; charset=utf-8")

    def exec_inspect(req: Request) -> Response:
        return json_response(execs.inspect(req.params["id"]))

    r = router.add
    r("POST", "/containers/{id}/exec", "ContainerExec", container_exec)
    r("POST", "/exec/{id}/start", "ExecStart", exec_start)
    r("POST", "/exec/{id}/resize", "ExecResize", exec_resize)
    r("GET", "/exec/{id}/json", "ExecInspect", exec_inspect)
