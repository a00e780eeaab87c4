"""The one error hierarchy of dockyard.

Every layer raises these; ``dockyard.api.errors`` maps each kind to an HTTP status in one table.
Messages follow Docker's texts because clients parse them (docker-py turns a 404 whose message
contains "no such image" into ``ImageNotFound``)::

    DockyardError                      500 unless a subclass says otherwise
    ├── NotFound                       404  No such container: <id>
    ├── InvalidParameter               400  bad JSON, bad query value, bad field
    ├── Conflict                       409  name in use, container running, image in use
    ├── NotModified                    304  already started / already stopped
    ├── Unauthorized                   401
    ├── Forbidden                      403  denied by policy
    ├── Unavailable                    503  daemon shutting down, disk full for the audit log
    ├── TooManyRequests                429  a per-identity rate or stream limit is exceeded
    ├── TooLarge                       413  a request body over the limit
    │   └── HeadersTooLarge            431  a request line or headers over the limit
    ├── Unsupported                    501  not implemented on this platform
    └── SystemFailure                  500  the runtime or the host failed
"""

from __future__ import annotations


class DockyardError(Exception):
    """Base of all errors that may reach a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DockyardError):
    """The named object does not exist."""


class InvalidParameter(DockyardError):
    """The request is malformed or names a bad value."""


class Conflict(DockyardError):
    """The request conflicts with the current state."""


class NotModified(DockyardError):
    """Nothing to do: the object is already in the requested state."""


class Unauthorized(DockyardError):
    """The caller could not be identified."""


class Forbidden(DockyardError):
    """The caller is identified but not allowed to do this."""


class Unavailable(DockyardError):
    """The daemon cannot serve this now."""


class Unsupported(DockyardError):
    """The operation is not supported here."""


class SystemFailure(DockyardError):
    """The host, runtime or storage failed."""


class TooManyRequests(DockyardError):
    """The caller exceeded its rate or concurrency limit."""


class TooLarge(DockyardError):
    """The request body is larger than the daemon accepts."""


class HeadersTooLarge(TooLarge):
    """The request line or headers are larger than the daemon accepts."""
