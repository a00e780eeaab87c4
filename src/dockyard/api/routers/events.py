"""``GET /events`` (``SystemEvents``): past events for ``since``/``until``, then the live ones, one JSON
object per chunk, flushed per event, until ``until`` passes, the client leaves, or it falls too far behind."""

from __future__ import annotations

import asyncio
import contextlib
import time

from dockyard.api.app import Router
from dockyard.api.messages import ClientGone, Request, StreamWriter
from dockyard.engine.event_filter import EventWindow, event_matcher, event_window
from dockyard.engine.events import Event, EventBus, Subscription
from dockyard.engine.filters import parse_filters


def register(router: Router, events: EventBus) -> None:
    """Add the events route."""

    async def system_events(req: Request) -> None:
        window = event_window(req.arg("since"), req.arg("until"), time.time_ns())
        match = event_matcher(parse_filters(req.arg("filters")))
        past, sub = events.subscribe(window.since_ns, window.until_ns, match)
        try:
            # Subscribed before the headers go out: a client that has them misses nothing from then on.
            out = await req.start_stream(200, "application/json")
            with contextlib.suppress(ClientGone):
                await _send(out, req, past, sub, window)
                await out.end()
        finally:
            sub.close()

    router.add("GET", "/events", "SystemEvents", system_events)


async def _send(
    out: StreamWriter, req: Request, past: list[Event], sub: Subscription, window: EventWindow
) -> None:
    for old in past:
        await out.write(old.wire)
    if window.only_past:
        return

    # Whatever ends the stream closes the subscription, which wakes the loop below.
    def on_gone(_: asyncio.Future[None]) -> None:
        sub.close()

    req.disconnected.add_done_callback(on_gone)
    left = window.seconds_left()
    timer = asyncio.get_running_loop().call_later(left, sub.close) if left is not None else None
    try:
        while (ev := await sub.next()) is not None:
            if window.until_ns is not None and ev.time_ns > window.until_ns:
                break  # emitted after ``until``, before the timer ran
            await out.write(ev.wire)
    finally:
        req.disconnected.remove_done_callback(on_gone)
        if timer is not None:
            timer.cancel()
    if req.disconnected.done():
        raise ClientGone()
