"""Which events a ``GET /events`` request wants: its time window and its filters, with moby's rules
(``daemon/events/filter.go`` and the ``since``/``until`` handling of ``router/system``).

Filters: ``type`` and ``scope`` match exactly; ``event`` matches the action exactly, except that
``exec_create``, ``exec_start`` and ``health_status`` also match as prefixes (their actions carry the
command: ``exec_start: sh -c true``); ``container``, ``network``, ``volume``, ``daemon``, ``plugin``,
``node``, ``service``, ``secret`` and ``config`` match the actor's id or ``name`` by prefix (and, as in moby,
exclude events of other types when given); ``image`` matches the image id or name exactly, with or without
its tag; ``label=key`` and ``label=key=value`` must all hold on the actor's attributes (container events
carry the container's labels). Unknown filter names are accepted and ignored, as dockerd does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dockyard.engine.events import Event
from dockyard.engine.filters import Filters
from dockyard.errors import InvalidParameter
from dockyard.logs.timestamps import parse_docker_time
from dockyard.store.reference import parse_normalized

__all__ = ["EventWindow", "event_matcher", "event_matches", "event_window"]

_NAMED = ("container", "network", "volume", "daemon", "plugin", "node", "service", "secret", "config")
_PREFIX_ACTIONS = {"exec_create", "exec_start", "health_status"}


@dataclass(frozen=True)
class EventWindow:
    """The ``since``/``until`` bounds of a request, in Unix nanoseconds (``None``: not given)."""

    since_ns: int | None
    until_ns: int | None
    now_ns: int

    @property
    def only_past(self) -> bool:
        """``until`` is already over: answer with history and end."""
        return self.until_ns is not None and self.until_ns < self.now_ns

    def seconds_left(self) -> float | None:
        """How long to stream before ``until`` (``None``: until the client leaves)."""
        if self.until_ns is None:
            return None
        return max(self.until_ns - self.now_ns, 0) / 1e9


def event_window(since: str | None, until: str | None, now_ns: int) -> EventWindow:
    """Parse ``since`` and ``until`` (Unix seconds with an optional fraction, RFC3339, or a Go duration
    meaning that long ago).

    Raises:
        InvalidParameter: a value does not parse, or ``until`` is before ``since`` (dockerd's message).
    """
    since_ns = parse_docker_time(since, now_ns) if since else None
    until_ns = parse_docker_time(until, now_ns) if until else None
    if since_ns is not None and until_ns is not None and until_ns < since_ns:
        raise InvalidParameter(f"`since` time ({since}) cannot be after `until` time ({until})")
    return EventWindow(since_ns, until_ns, now_ns)


def event_matcher(f: Filters) -> Callable[[Event], bool] | None:
    """A predicate for ``f``; ``None`` when there are no filters (every event passes)."""
    if not f:
        return None
    return lambda ev: event_matches(ev, f)


def event_matches(ev: Event, f: Filters) -> bool:
    """Whether ``ev`` passes every filter in ``f``."""
    return (
        _action_matches(ev.action, f)
        and f.exact_match("type", ev.type)
        and f.exact_match("scope", "local")
        and all(_name_matches(ev, f, key) for key in _NAMED)
        and _image_matches(ev, f)
        and f.match_label(ev.attributes)
    )


def _action_matches(action: str, f: Filters) -> bool:
    if _PREFIX_ACTIONS & set(f.get("event")):
        return f.fuzzy_match("event", action)
    return f.exact_match("event", action)


def _name_matches(ev: Event, f: Filters, key: str) -> bool:
    if not f.get(key):
        return True
    return f.fuzzy_match(key, ev.actor_id) or f.fuzzy_match(key, ev.attributes.get("name", ""))


def _image_matches(ev: Event, f: Filters) -> bool:
    wanted = f.get("image")
    if not wanted:
        return True
    name = ev.attributes.get("name" if ev.type == "image" else "image", "")
    candidates = {ev.actor_id, name, _strip_tag(ev.actor_id), _strip_tag(name)}
    return any(v in candidates for v in wanted)


def _strip_tag(ref: str) -> str:
    """``busybox:1.36`` → ``busybox`` (moby's ``stripTag``); what does not parse is kept as it is."""
    try:
        return parse_normalized(ref).familiar_name
    except InvalidParameter:
        return ref
