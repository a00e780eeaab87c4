"""Query and body parsing shared by the routers, with Docker's leniency and error texts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from dockyard.api.messages import Request, Response
from dockyard.errors import InvalidParameter

_FALSE = {"", "0", "no", "false", "none"}


def query_bool(req: Request, name: str, default: bool = False) -> bool:
    """Docker's BoolValue: absent → default; "", 0, no, false, none → False; anything else → True."""
    value = req.arg(name)
    if value is None:
        return default
    return value.strip().lower() not in _FALSE


def query_int(req: Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter; a bad value is a 400 naming the parameter."""
    value = req.arg(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        text = f'invalid value for {name}: strconv.Atoi: parsing "{value}": invalid syntax'
        raise InvalidParameter(text) from None


def json_body(req: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object."""
    if not req.body.strip():
        if allow_empty:
            return {}
        raise InvalidParameter("invalid JSON: request body is empty")
    try:
        data = json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from None
    if data is None and allow_empty:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameter("invalid JSON: expected an object")
    return data


async def body_chunks(req: Request, size: int) -> AsyncIterator[bytes]:
    """A streamed request body (``stream_body`` routes), ``size`` bytes at a time."""
    assert req.body_stream is not None
    while chunk := await req.body_stream.read(size):
        yield chunk


def confined_owner(req: Request) -> str | None:
    """The caller's owner when a policy confines it to its own objects (set by the authorization stage)."""
    return req.decision.owner if req.decision is not None else None


def json_response(obj: Any, status: int = 200) -> Response:
    """Serialize like Go's json.Encoder (compact, trailing newline)."""
    return Response(status, json.dumps(obj, separators=(",", ":")).encode() + b"\n")


NO_CONTENT = Response(204, b"", None)
