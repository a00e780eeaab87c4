"""Per-identity rate limits: a token bucket for requests per second and a counter of concurrent streams.

Hand-written because it is a dozen lines on the event loop's single thread (no locks needed); the PyPI
limiters are built for threads or for shared stores such as Redis, which a single daemon does not need.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dockyard.errors import TooManyRequests
from dockyard.security.policy import Limits

# Operations that hold a connection open for a long time (each counts as one stream while it runs).
STREAM_OPERATIONS = frozenset({
    "ContainerAttach", "ContainerAttachWebsocket", "ContainerLogs", "ContainerWait", "ContainerStats",
    "ContainerExport", "ContainerArchive", "PutContainerArchive", "SystemEvents", "ExecStart", "ImageCreate",
    "ImageBuild", "ImagePush", "ImageLoad", "ImageGet", "ImageGetAll", "ServiceLogs", "TaskLogs",
    "PluginPull",
})  # fmt: skip


class RateLimiter:
    """Buckets and stream counts keyed by caller (they survive policy reloads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key → [tokens, last refill time]
        self._streams: dict[str, int] = {}

    def take(self, key: str, limits: Limits) -> None:
        """Spend one request token; raise TooManyRequests when the bucket is empty."""
        if not limits.requests_per_second:
            return
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(limits.burst), now]
        tokens = min(float(limits.burst), bucket[0] + (now - bucket[1]) * limits.requests_per_second)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            raise TooManyRequests(
                f"rate limit exceeded for {key}: at most {limits.requests_per_second:g} requests per second "
                f"(burst {limits.burst}); retry later"
            )
        bucket[0] = tokens - 1.0

    def open_stream(self, key: str, limits: Limits) -> bool:
        """Count a stream for the caller; False when limits do not count streams (nothing to close)."""
        if not limits.concurrent_streams:
            return False
        current = self._streams.get(key, 0)
        if current >= limits.concurrent_streams:
            raise TooManyRequests(
                f"too many concurrent streams for {key}: at most {limits.concurrent_streams} "
                "(logs, attach, wait, events, ...) at once"
            )
        self._streams[key] = current + 1
        return True

    def close_stream(self, key: str) -> None:
        """A counted stream ended."""
        left = self._streams.get(key, 1) - 1
        if left > 0:
            self._streams[key] = left
        else:
            self._streams.pop(key, None)

    def streams(self, key: str) -> int:
        """Streams the caller has open now."""
        return self._streams.get(key, 0)
