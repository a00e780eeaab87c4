"""The event bus and event filtering: wire shape, moby's filter rules, the since/until window, and that a
subscriber that stops reading neither blocks emitters nor makes the bus hold more than its bound."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from dockyard.engine.container import Container
from dockyard.engine.event_filter import event_matcher, event_matches, event_window
from dockyard.engine.events import Event, EventBus
from dockyard.engine.filters import Filters, parse_filters
from dockyard.errors import InvalidParameter

CID = "c0ffee" + "0" * 58
IMAGE_ID = "sha256:" + "ab" * 32
NS = 1_000_000_000


def _container(labels: dict[str, str] | None = None, image: str = "busybox", name: str = "/web") -> Container:
    return Container(
        id=CID, name=name, created=0.0, image=image, image_id=IMAGE_ID, config={"Labels": labels or {}},
        host_config={}, path="sh", args=[],
    )  # fmt: skip


def _container_event(bus: EventBus, action: str = "start", **kw: Any) -> Event:
    bus.container(_container(**kw), action)
    return _last(bus)


def _last(bus: EventBus) -> Event:
    past, sub = bus.subscribe(0, None)
    sub.close()
    return past[-1]


def _f(**fields: list[str]) -> Filters:
    return parse_filters(json.dumps(fields))


# -- wire shape -------------------------------------------------------------------------------------------
def test_container_event_has_dockerd_shape() -> None:
    bus = EventBus()
    bus.container(_container({"com.example": "x"}), "die", exitCode="3")
    msg = json.loads(_last(bus).wire)
    assert list(msg) == ["status", "id", "from", "Type", "Action", "Actor", "scope", "time", "timeNano"]
    assert msg["status"] == msg["Action"] == "die"
    assert msg["id"] == msg["Actor"]["ID"] == CID
    assert msg["from"] == "busybox"
    assert msg["Type"] == "container" and msg["scope"] == "local"
    assert msg["Actor"]["Attributes"] == {
        "com.example": "x",
        "exitCode": "3",
        "image": "busybox",
        "name": "web",
    }
    assert list(msg["Actor"]["Attributes"]) == sorted(msg["Actor"]["Attributes"])  # as Go marshals maps
    assert msg["time"] == msg["timeNano"] // NS
    assert abs(msg["timeNano"] - time.time_ns()) < 5 * NS
    assert _last(bus).wire.endswith(b"}\n")


def test_image_and_prune_events_shape() -> None:
    bus = EventBus()
    bus.image(IMAGE_ID, "tag", "foo:1", {"l": "v"})
    msg = _last(bus).message()
    assert msg["status"] == "tag" and msg["id"] == IMAGE_ID and "from" not in msg
    assert msg["Actor"] == {"ID": IMAGE_ID, "Attributes": {"l": "v", "name": "foo:1"}}
    bus.emit("image", "prune", attributes={"reclaimed": "0"})
    msg = _last(bus).message()
    assert "id" not in msg and msg["status"] == "prune"
    assert msg["Actor"] == {"ID": "", "Attributes": {"reclaimed": "0"}}


def test_daemon_attributes_win_over_labels() -> None:
    ev = _container_event(EventBus(), labels={"name": "fake", "image": "fake"})
    assert ev.attributes["name"] == "web" and ev.attributes["image"] == "busybox"


# -- filters ----------------------------------------------------------------------------------------------
def test_type_event_and_scope_filters() -> None:
    ev = _container_event(EventBus(), "start")
    assert event_matches(ev, _f(type=["container"]))
    assert not event_matches(ev, _f(type=["image"]))
    assert event_matches(ev, _f(event=["die", "start"]))
    assert not event_matches(ev, _f(event=["star"]))  # exact for ordinary actions
    assert event_matches(ev, _f(scope=["local"]))
    assert not event_matches(ev, _f(scope=["swarm"]))
    assert event_matches(ev, _f(whatever=["x"]))  # unknown names are ignored, as dockerd does


def test_exec_actions_match_by_prefix() -> None:
    bus = EventBus()
    bus.container(_container(), "exec_start: sh -c true")
    ev = _last(bus)
    assert event_matches(ev, _f(event=["exec_start"]))
    assert not event_matches(ev, _f(event=["exec_create"]))
    bus.container(_container(), "exec_die")
    assert not event_matches(_last(bus), _f(event=["exec_start"]))


def test_container_filter_by_name_or_id_prefix() -> None:
    bus = EventBus()
    ev = _container_event(bus)
    assert event_matches(ev, _f(container=["web"]))
    assert event_matches(ev, _f(container=["c0ffee"]))
    assert event_matches(ev, _f(container=["other", "we"]))
    assert not event_matches(ev, _f(container=["other"]))
    bus.image(IMAGE_ID, "tag", "foo:1")
    assert not event_matches(_last(bus), _f(container=["web"]))  # moby: the filter excludes other types


def test_image_filter_matches_with_and_without_tag() -> None:
    bus = EventBus()
    ev = _container_event(bus, image="busybox:1.36")
    for wanted in ("busybox:1.36", "busybox"):
        assert event_matches(ev, _f(image=[wanted]))
    assert not event_matches(ev, _f(image=["alpine"]))
    bus.image(IMAGE_ID, "tag", "foo:1")
    image_ev = _last(bus)
    for wanted in ("foo:1", "foo", IMAGE_ID):
        assert event_matches(image_ev, _f(image=[wanted]))
    assert not event_matches(image_ev, _f(image=["foo:2"]))


def test_label_filters_as_docker() -> None:
    ev = _container_event(EventBus(), labels={"dockyard.owner": "alice", "tier": "web"})
    assert event_matches(ev, _f(label=["dockyard.owner"]))
    assert event_matches(ev, _f(label=["dockyard.owner=alice"]))
    assert event_matches(ev, _f(label=["dockyard.owner=alice", "tier=web"]))  # all must hold
    assert not event_matches(ev, _f(label=["dockyard.owner=alice", "tier=db"]))
    assert not event_matches(ev, _f(label=["dockyard.owner=bob"]))
    assert not event_matches(ev, _f(label=["missing"]))
    unlabelled = _container_event(EventBus())
    assert not event_matches(unlabelled, _f(label=["dockyard.owner=alice"]))
    # The owner filter that authorization appends narrows whatever the client asked for.
    assert event_matches(ev, _f(type=["container"], label=["dockyard.owner=alice"]))
    assert not event_matches(ev, _f(type=["container"], label=["dockyard.owner=bob"]))


def test_no_filters_means_no_matcher() -> None:
    assert event_matcher(Filters()) is None
    assert event_matcher(_f(type=["image"])) is not None


# -- time window ------------------------------------------------------------------------------------------
NOW = 1_700_000_000 * NS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1699999990", 1_699_999_990 * NS),
        ("1699999990.5", 1_699_999_990 * NS + NS // 2),
        ("1699999990.000000001", 1_699_999_990 * NS + 1),
        ("10s", NOW - 10 * NS),
        ("1m30s", NOW - 90 * NS),
        ("2023-11-14T22:13:10Z", 1_699_999_990 * NS),
        ("2023-11-14T23:13:10.25+01:00", 1_699_999_990 * NS + NS // 4),
    ],
)
def test_since_formats(text: str, expected: int) -> None:
    assert event_window(text, None, NOW).since_ns == expected


def test_window_rules() -> None:
    w = event_window(None, None, NOW)
    assert (w.since_ns, w.until_ns, w.only_past, w.seconds_left()) == (None, None, False, None)
    past = event_window("1699999000", "1699999990", NOW)
    assert past.only_past
    future = event_window(None, "1700000002", NOW)
    assert not future.only_past and future.seconds_left() == 2.0
    with pytest.raises(InvalidParameter, match=r"`since` time \(20\) cannot be after `until` time \(10\)"):
        event_window("20", "10", NOW)
    with pytest.raises(InvalidParameter, match="failed to parse"):
        event_window("yesterday", None, NOW)


# -- the bus ----------------------------------------------------------------------------------------------
def test_history_only_with_since_or_until_and_bounded() -> None:
    bus = EventBus(history=5)
    for i in range(8):
        bus.emit("image", "tag", f"id{i}")
    past, sub = bus.subscribe(None, None)
    assert past == []
    sub.close()
    past, sub = bus.subscribe(0, None)
    assert [e.actor_id for e in past] == [f"id{i}" for i in range(3, 8)]  # the ring keeps the last 5
    sub.close()
    middle = past[2].time_ns
    past, sub = bus.subscribe(middle, None)
    assert all(e.time_ns >= middle for e in past) and past[0].actor_id == "id5"
    sub.close()
    past, sub = bus.subscribe(None, middle)  # until alone: everything kept up to it
    assert past[-1].time_ns <= middle and past[0].actor_id == "id3"
    sub.close()
    past, sub = bus.subscribe(0, None, lambda e: e.actor_id == "id4")
    assert [e.actor_id for e in past] == ["id4"]
    sub.close()
    assert bus.subscribers == 0


def test_subscriber_gets_matching_live_events_in_order() -> None:
    async def main() -> None:
        bus = EventBus()
        _, sub = bus.subscribe(None, None, event_matcher(_f(type=["image"])))
        bus.emit("image", "tag", "a")
        bus.emit("container", "start", "b")
        bus.emit("image", "untag", "c")
        first, second = await sub.next(), await sub.next()
        assert first is not None and second is not None
        assert [first.actor_id, second.actor_id] == ["a", "c"]
        waiter = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0)
        assert not waiter.done()
        sub.close()  # ending a subscription wakes its reader
        assert await asyncio.wait_for(waiter, 5) is None
        assert bus.subscribers == 0

    asyncio.run(main())


def test_slow_subscriber_is_dropped_without_blocking_or_growing() -> None:
    async def main() -> None:
        bus = EventBus(history=100, queue=50)
        _, slow = bus.subscribe(None, None)
        _, fast = bus.subscribe(None, None)
        got = 0
        started = time.monotonic()
        for i in range(10_000):
            bus.emit("image", "tag", f"id{i}")
            assert slow.pending <= 50
            while fast.pending:
                await fast.next()
                got += 1
        assert time.monotonic() - started < 5  # never waited on the reader that does not read
        assert slow.closed and slow.overflowed and slow.pending == 0
        assert await slow.next() is None
        assert got == 10_000 and not fast.closed
        assert bus.subscribers == 1
        fast.close()

    asyncio.run(main())
