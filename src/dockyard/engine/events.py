"""The event bus behind ``GET /events`` (``docker events``): what happened to containers and images.

Use-cases report with one call (``events.container(c, "start")``, ``events.image(id, "tag", name)``). The bus
keeps a bounded ring of recent events (answering ``since``) and offers each new event to every subscriber's
bounded queue. Emitting never waits: a subscriber whose queue is full (a client that stopped reading) is
dropped and its stream ends, so a slow client can neither hold up the engine nor make it hold memory without
bound. Events are built in Docker's shape (moby's ``events.Message``), encoded once, and shared by every
subscriber. The bus lives on the daemon's event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.engine.container import Container

__all__ = ["HISTORY", "QUEUE", "Event", "EventBus", "Subscription"]

log = logging.getLogger("dockyard.engine")

HISTORY = 1024  # events kept for ``since`` (dockerd keeps 256)
QUEUE = 1024  # undelivered events a subscriber may have before it is dropped
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its object type, action, actor and time; ``wire`` is its JSON line for the API."""

    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_ns: int
    wire: bytes

    @classmethod
    def make(
        cls, type_: str, action: str, actor_id: str, attributes: Mapping[str, str], time_ns: int
    ) -> Event:
        """Build an event and encode it once.

        Args:
            type_: ``container``, ``image``, ...
            action: ``create``, ``die``, ``exec_create: sh -c true``, ...
            actor_id: the object's id (empty for ``prune``).
            attributes: the actor's attributes (labels, ``name``, ``exitCode``, ...).
            time_ns: when it happened, in Unix nanoseconds.

        Returns:
            The event.
        """
        attrs = dict(sorted(attributes.items()))  # Go marshals maps with sorted keys
        return cls(type_, action, actor_id, attrs, time_ns, _encode(type_, action, actor_id, attrs, time_ns))

    def message(self) -> dict[str, Any]:
        """The wire object (``EventMessage`` plus the legacy ``status``/``id``/``from`` fields)."""
        loaded: dict[str, Any] = json.loads(self.wire)
        return loaded


def _encode(type_: str, action: str, actor_id: str, attrs: dict[str, str], time_ns: int) -> bytes:
    msg: dict[str, Any] = {}
    if type_ in ("container", "image"):  # moby still fills the deprecated fields for these two
        msg["status"] = action
        if actor_id:
            msg["id"] = actor_id
        if type_ == "container" and attrs.get("image"):
            msg["from"] = attrs["image"]
    msg.update(
        Type=type_, Action=action, Actor={"ID": actor_id, "Attributes": attrs}, scope="local",
        time=time_ns // _NS, timeNano=time_ns,
    )  # fmt: skip
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


class Subscription:
    """One listener: the events that passed its filter and have not been taken yet (at most ``limit``)."""

    def __init__(self, bus: EventBus, match: Callable[[Event], bool] | None, limit: int) -> None:
        self._bus = bus
        self._match = match
        self._limit = limit
        self._pending: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def offer(self, ev: Event) -> None:
        """Queue ``ev`` when it matches; a full queue ends the subscription (called by the bus)."""
        if self.closed or (self._match is not None and not self._match(ev)):
            return
        if len(self._pending) >= self._limit:
            log.warning("events: dropping a subscriber that fell %d events behind", self._limit)
            self.overflowed = True
            self.close()
            return
        self._pending.append(ev)
        self._ready.set()

    @property
    def pending(self) -> int:
        """Events queued and not taken yet."""
        return len(self._pending)

    async def next(self) -> Event | None:
        """The next event; ``None`` once the subscription is closed (by its owner, or dropped as too slow)."""
        while not self._pending and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        return self._pending.popleft()

    def close(self) -> None:
        """Stop listening (idempotent); a waiting :meth:`next` returns ``None``."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        self._ready.set()
        self._bus.unsubscribe(self)


class EventBus:
    """Recent events and live subscribers."""

    def __init__(self, history: int = HISTORY, queue: int = QUEUE) -> None:
        """Keep ``history`` past events; drop a subscriber that has ``queue`` events undelivered."""
        self._history: deque[Event] = deque(maxlen=history)
        self._subs: set[Subscription] = set()
        self._queue = queue

    @property
    def subscribers(self) -> int:
        """How many subscriptions are live."""
        return len(self._subs)

    def emit(
        self, type_: str, action: str, actor_id: str = "", attributes: Mapping[str, str] | None = None
    ) -> Event:
        """Record an event and offer it to every subscriber (never waits)."""
        ev = Event.make(type_, action, actor_id, attributes or {}, time.time_ns())
        self._history.append(ev)
        for sub in list(self._subs):
            sub.offer(ev)
        return ev

    def container(self, c: Container, action: str, **extra: str) -> None:
        """A container event, with dockerd's attributes: ``extra``, the labels, ``image`` and ``name``."""
        attrs = {**extra, **(c.config.get("Labels") or {})}
        if c.image:
            attrs["image"] = c.image
        attrs["name"] = c.name.lstrip("/")
        self.emit("container", action, c.id, attrs)

    def image(self, image_id: str, action: str, name: str, labels: Mapping[str, str] | None = None) -> None:
        """An image event: its labels (while it exists) and ``name`` (a reference, or the id itself)."""
        self.emit("image", action, image_id, {**(labels or {}), "name": name})

    def subscribe(
        self, since_ns: int | None, until_ns: int | None, match: Callable[[Event], bool] | None = None
    ) -> tuple[list[Event], Subscription]:
        """The past events a request asks for and a subscription to the next ones, taken together so that
        nothing falls between them.

        As dockerd: past events are returned only when ``since`` or ``until`` is given; they are those at or
        after ``since`` (from the start of the ring without it) and not after ``until``.
        """
        past: list[Event] = []
        if since_ns is not None or until_ns is not None:
            low = since_ns or 0
            past = [
                ev for ev in self._history
                if ev.time_ns >= low and (until_ns is None or ev.time_ns <= until_ns)
                and (match is None or match(ev))
            ]  # fmt: skip
        sub = Subscription(self, match, self._queue)
        self._subs.add(sub)
        return past, sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription (its :meth:`Subscription.close` calls this)."""
        self._subs.discard(sub)
