"""The only place where an error kind becomes an HTTP status and a ``{"message": ...}`` body."""

from __future__ import annotations

import json
import logging

from dockyard import errors
from dockyard.api.messages import Response

log = logging.getLogger("dockyard.api")

STATUS_BY_KIND: dict[type[errors.DockyardError], int] = {
    errors.NotFound: 404,
    errors.InvalidParameter: 400,
    errors.Conflict: 409,
    errors.NotModified: 304,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.Unavailable: 503,
    errors.TooManyRequests: 429,
    errors.Unsupported: 501,
    errors.TooLarge: 413,
    errors.HeadersTooLarge: 431,
    errors.SystemFailure: 500,
}


def status_for(exc: BaseException) -> int:
    """HTTP status for an exception (500 for anything that is not a DockyardError)."""
    for kind in type(exc).__mro__:
        status = STATUS_BY_KIND.get(kind)  # type: ignore[call-overload,unused-ignore]
        if status is not None:
            return status
    return 500


def error_response(exc: BaseException, request_id: str = "") -> Response:
    """Turn an exception into Docker's error response; unexpected ones are logged with the request id."""
    status = status_for(exc)
    if isinstance(exc, errors.DockyardError):
        message = exc.message
        if status >= 500:
            log.error("request %s failed: %s", request_id, message)
    else:
        message = f"{type(exc).__name__}: {exc}"
        log.error("request %s crashed", request_id, exc_info=exc)
    if status == 304:
        return Response(304, b"", None)
    return Response(status, json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n")
