"""Container endpoints: parse the request, call the engine, serialize."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from dockyard.api import streams
from dockyard.api.app import Router
from dockyard.api.messages import ClientGone, Request, Response
from dockyard.api.params import NO_CONTENT, json_body, json_response, query_bool, query_int
from dockyard.engine.containers import ContainerService
from dockyard.engine.filters import parse_filters
from dockyard.engine.stdio import LogOptions, StdioService
from dockyard.errors import DockyardError

_T = TypeVar("_T")


def register(router: Router, containers: ContainerService, stdio: StdioService) -> None:
    """Add the container routes."""
    life = containers.lifecycle

    def container_list(req: Request) -> Response:
        rows = containers.summaries(
            all=query_bool(req, "all"),
            limit=query_int(req, "limit"),
            filters=parse_filters(req.arg("filters")),
        )
        return json_response(rows)

    async def container_list_sized(req: Request) -> Response:
        rows = containers.summaries(
            all=query_bool(req, "all"),
            limit=query_int(req, "limit"),
            filters=parse_filters(req.arg("filters")),
        )
        await containers.sizes(rows)
        return json_response(rows)

    def container_list_route(req: Request) -> object:
        return container_list_sized(req) if query_bool(req, "size") else container_list(req)

    def container_create(req: Request) -> Response:
        return json_response(containers.create(req.arg("name"), json_body(req)), 201)

    def container_inspect(req: Request) -> Response:
        return json_response(containers.inspect(req.params["id"]))

    async def container_inspect_sized(req: Request) -> Response:
        return json_response(await containers.inspect_sized(req.params["id"]))

    def container_inspect_route(req: Request) -> object:
        return container_inspect_sized(req) if query_bool(req, "size") else container_inspect(req)

    async def container_start(req: Request) -> Response:
        await containers.start(req.params["id"])
        return NO_CONTENT

    async def container_stop(req: Request) -> Response:
        await life.stop(req.params["id"], req.arg("signal"), query_int(req, "t"))
        return NO_CONTENT

    async def container_restart(req: Request) -> Response:
        await life.restart(req.params["id"], req.arg("signal"), query_int(req, "t"))
        return NO_CONTENT

    async def container_kill(req: Request) -> Response:
        await life.kill(req.params["id"], req.arg("signal"))
        return NO_CONTENT

    async def container_pause(req: Request) -> Response:
        await life.pause(req.params["id"])
        return NO_CONTENT

    async def container_unpause(req: Request) -> Response:
        await life.unpause(req.params["id"])
        return NO_CONTENT

    async def container_rename(req: Request) -> Response:
        await containers.rename(req.params["id"], req.arg("name") or "")
        return NO_CONTENT

    async def container_delete(req: Request) -> Response:
        await containers.remove(
            req.params["id"], force=query_bool(req, "force"), volumes=query_bool(req, "v")
        )
        return NO_CONTENT

    async def container_prune(req: Request) -> Response:
        return json_response(await containers.prune(parse_filters(req.arg("filters"))))

    async def container_wait(req: Request) -> Response | None:
        exited = life.wait(req.params["id"], req.arg("condition") or "")
        out = await req.start_stream(200, "application/json")  # headers now: docker run waits on them
        waiters: list[asyncio.Future[Any]] = [exited, req.disconnected]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            exited.cancel()
            return None
        await out.write(b'{"Error":null,"StatusCode":%d}\n' % exited.result())
        await out.end()
        return None

    async def container_top(req: Request) -> Response:
        return json_response(await stdio.top(req.params["id"], req.arg("ps_args") or ""))

    async def container_resize(req: Request) -> Response:
        h, w = query_int(req, "h", 0) or 0, query_int(req, "w", 0) or 0
        await stdio.resize(req.params["id"], h, w)
        return Response(200, b"", "text/plain; charset=utf-8")

    async def container_logs(req: Request) -> Response | None:
        opts = LogOptions(
            follow=query_bool(req, "follow"),
            stdout=query_bool(req, "stdout"),
            stderr=query_bool(req, "stderr"),
            since=req.arg("since"),
            until=req.arg("until"),
            tail=_tail(req.arg("tail")),
        )
        c, records = stdio.logs(req.params["id"], opts)
        out = await req.start_stream(200, streams.content_type(c.tty, req.version))
        with contextlib.suppress(ClientGone):
            await streams.write_logs(out, records, c.tty, query_bool(req, "timestamps"), opts.follow)
            await out.end()
        return None

    async def container_attach(req: Request) -> Response | None:
        c = stdio.attach_target(req.params["id"])
        with_stdin = query_bool(req, "stdin")
        raw = req.hijack(streams.content_type(c.tty, req.version))
        try:
            if query_bool(req, "logs"):
                _, records = stdio.logs(
                    c.id, LogOptions(stdout=query_bool(req, "stdout"), stderr=query_bool(req, "stderr"))
                )
                async for rec in records:
                    raw.write(streams.encode(c.tty, rec.stream, rec.data))
            if not query_bool(req, "stream"):
                raw.close()
                return None
            stdio_stream = await _until_gone(stdio.attach(c), raw.closed)
        except (DockyardError, ClientGone):
            raw.close()
            return None
        await streams.pump_attach(raw, stdio_stream, c.tty, with_stdin, bool(c.config.get("StdinOnce")))
        return None

    r = router.add
    r("GET", "/containers/json", "ContainerList", container_list_route)
    r("POST", "/containers/create", "ContainerCreate", container_create)
    r("POST", "/containers/prune", "ContainerPrune", container_prune)
    r("GET", "/containers/{id}/json", "ContainerInspect", container_inspect_route)
    r("GET", "/containers/{id}/top", "ContainerTop", container_top)
    r("GET", "/containers/{id}/logs", "ContainerLogs", container_logs)
    r("POST", "/containers/{id}/start", "ContainerStart", container_start)
    r("POST", "/containers/{id}/stop", "ContainerStop", container_stop)
    r("POST", "/containers/{id}/restart", "ContainerRestart", container_restart)
    r("POST", "/containers/{id}/kill", "ContainerKill", container_kill)
    r("POST", "/containers/{id}/pause", "ContainerPause", container_pause)
    r("POST", "/containers/{id}/unpause", "ContainerUnpause", container_unpause)
    r("POST", "/containers/{id}/rename", "ContainerRename", container_rename)
    r("POST", "/containers/{id}/wait", "ContainerWait", container_wait)
    r("POST", "/containers/{id}/resize", "ContainerResize", container_resize)
    r("POST", "/containers/{id}/attach", "ContainerAttach", container_attach)
    r("DELETE", "/containers/{id}", "ContainerDelete", container_delete)


def _tail(value: str | None) -> int | None:
    if value is None or value in ("", "all"):
        return None
    try:
        return max(int(value), 0)
    except ValueError:
        return None


async def _until_gone(coro: Awaitable[_T], gone: asyncio.Future[None]) -> _T:
    task = asyncio.ensure_future(coro)
    waiters: list[asyncio.Future[Any]] = [task, gone]
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()
