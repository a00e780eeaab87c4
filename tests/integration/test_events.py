"""``GET /events`` through the real docker CLI (``docker events``) and the docker SDK: history with
``--since``/``--until``, live streaming with filters, the events of containers, execs and images, errors,
and a client that stops reading."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

import pytest

from tests.conftest import DOCKER_CLI, Daemon

# docker-py leaves the hijacked sockets of attach/exec to the garbage collector (also against dockerd).
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def _history(daemon: Daemon, since: float, **filters: str) -> list[dict[str, Any]]:
    """Every event since ``since`` up to now that matches ``filters`` (the SDK, with since and until)."""
    stream = daemon.api.events(since=since, until=time.time() + 0.001, filters=filters or None, decode=True)
    return list(stream)


def _actions(events: list[dict[str, Any]]) -> list[str]:
    return [e["Action"] for e in events]


class _Lines:
    """The lines a subprocess prints, readable with a timeout."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self._lines.put(line)

    def get(self, timeout: float) -> bytes | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None


@pytest.fixture
def cli_events(daemon: Daemon) -> Iterator[Any]:
    """Start ``docker events ARGS...`` in the background; terminated at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> _Lines:
        env = {**os.environ, "DOCKER_HOST": daemon.host, "DOCKER_CLI_HINTS": "false"}
        env.pop("DOCKER_CONTEXT", None)
        proc = subprocess.Popen(
            [DOCKER_CLI, "events", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        procs.append(proc)
        assert proc.stdout is not None
        return _Lines(proc.stdout)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


# -- docker CLI -------------------------------------------------------------------------------------------
def test_cli_history_of_a_run(daemon: Daemon, unique_name: str) -> None:
    since = f"{time.time():.9f}"
    daemon.cli(
        "run", "--rm", "--name", unique_name, "-l", "team=blue", "busybox", "sh", "-c", "exit 3", check=False
    )
    until = f"{time.time():.9f}"
    out = daemon.cli(
        "events", "--since", since, "--until", until, "--filter", f"container={unique_name}",
        "--format", "{{json .}}", timeout=20,
    ).stdout  # fmt: skip
    events = [json.loads(line) for line in out.splitlines()]
    assert _actions(events) == ["create", "attach", "start", "die", "destroy"]
    cid = events[0]["Actor"]["ID"]
    for ev in events:
        assert ev["Type"] == "container" and ev["scope"] == "local"
        assert ev["id"] == ev["Actor"]["ID"] == cid and ev["status"] == ev["Action"]
        assert ev["from"] == "busybox"
        attrs = ev["Actor"]["Attributes"]
        assert (attrs["name"], attrs["image"], attrs["team"]) == (unique_name, "busybox", "blue")
        assert float(since) * 1e9 <= ev["timeNano"] <= float(until) * 1e9
        assert ev["time"] == ev["timeNano"] // 1_000_000_000
    assert events[3]["Actor"]["Attributes"]["exitCode"] == "3"
    assert [e["timeNano"] for e in events] == sorted(e["timeNano"] for e in events)
    # The CLI's own line format reads the same events.
    plain = daemon.cli("events", "--since", since, "--until", until, "--filter", f"container={unique_name}")
    first = plain.stdout.decode().splitlines()[0]
    assert f"container create {cid} (" in first and f"name={unique_name}" in first and "team=blue" in first


def test_cli_streams_live_die_events(daemon: Daemon, unique_name: str, cli_events: Any) -> None:
    lines = cli_events("--filter", "event=die", "--format", "{{json .}}")
    line = None
    # The CLI connects in the background: run containers until one of their deaths arrives live.
    for attempt in range(20):
        daemon.cli(
            "run", "--rm", "--name", f"{unique_name}-{attempt}", "busybox", "sh", "-c", "exit 5", check=False
        )
        line = lines.get(timeout=1)
        if line is not None:
            break
    assert line is not None, "docker events printed nothing"
    ev = json.loads(line)
    assert ev["Action"] == "die" and ev["Actor"]["Attributes"]["exitCode"] == "5"
    assert ev["Actor"]["Attributes"]["name"].startswith(unique_name)
    # Later deaths keep coming on the same stream, and only deaths.
    daemon.cli("run", "--rm", "--name", unique_name, "busybox", "sh", "-c", "exit 6", check=False)
    while (line := lines.get(timeout=10)) is not None:
        ev = json.loads(line)
        assert ev["Action"] == "die"
        if ev["Actor"]["Attributes"]["name"] == unique_name:
            assert ev["Actor"]["Attributes"]["exitCode"] == "6"
            break
    assert line is not None, f"no die event for {unique_name}"


def test_cli_since_then_live(daemon: Daemon, unique_name: str, cli_events: Any) -> None:
    daemon.cli("create", "--name", unique_name, "busybox", "true")
    since = f"{time.time() - 30:.3f}"
    lines = cli_events("--since", since, "--filter", f"container={unique_name}", "--format", "{{.Action}}")
    assert lines.get(timeout=10) == b"create\n"  # from the history
    daemon.cli("rm", unique_name)
    assert lines.get(timeout=10) == b"destroy\n"  # live


# -- docker SDK -------------------------------------------------------------------------------------------
def test_sdk_streams_with_filters(daemon: Daemon, unique_name: str) -> None:
    client = daemon.client
    stream = client.events(decode=True, filters={"type": "container", "container": unique_name})
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=lambda: [got.put(e) for e in stream], daemon=True).start()
    try:
        c = client.containers.create("busybox", ["sleep", "60"], name=unique_name, labels={"k": "v"})
        for _ in range(100):  # until the stream is surely connected: rename back and forth, watch for it
            try:
                first = got.get(timeout=0.2)
                break
            except queue.Empty:
                c.rename(unique_name + "-x")
                c.rename(unique_name)
        else:
            pytest.fail("no events on the SDK stream")
        assert first["Type"] == "container" and first["Actor"]["ID"] == c.id
        c.start()
        c.kill()
        seen = []
        while "die" not in seen:
            ev = got.get(timeout=10)
            assert ev["Actor"]["ID"] == c.id and ev["Actor"]["Attributes"]["k"] == "v"
            seen.append(ev["Action"])
        assert seen[-3:] == ["start", "kill", "die"]
        c.remove()
    finally:
        stream.close()


def test_sdk_since_until_container_lifecycle(daemon: Daemon, unique_name: str) -> None:
    client = daemon.client
    since = time.time()
    c = client.containers.run("busybox", ["sleep", "600"], name=unique_name, detach=True, tty=True)
    c.rename(unique_name + "-2")
    c.pause()
    c.unpause()
    c.top()
    c.resize(20, 80)
    c.restart(timeout=1)
    c.stop(timeout=0)
    c.remove()
    events = _history(daemon, since, container=c.id)
    # sleep as pid 1 ignores SIGTERM: SIGKILL follows at the timeout, as with dockerd.
    assert _actions(events) == [
        "create", "start", "rename", "pause", "unpause", "top", "resize",
        "kill", "kill", "die", "stop", "start", "restart", "kill", "kill", "die", "stop", "destroy",
    ]  # fmt: skip
    by_action = {e["Action"]: e["Actor"]["Attributes"] for e in events}
    assert by_action["rename"]["oldName"] == "/" + unique_name
    assert by_action["rename"]["name"] == unique_name + "-2"
    assert (by_action["resize"]["height"], by_action["resize"]["width"]) == ("20", "80")
    kills = [e["Actor"]["Attributes"]["signal"] for e in events if e["Action"] == "kill"]
    assert kills == ["15", "9", "15", "9"]
    assert by_action["die"]["exitCode"] == "137"
    assert by_action["destroy"]["name"] == unique_name + "-2"


def test_sdk_exec_events(daemon: Daemon, unique_name: str) -> None:
    c = daemon.client.containers.run("busybox", ["sleep", "600"], name=unique_name, detach=True)
    try:
        since = time.time()
        assert c.exec_run(["sh", "-c", "exit 4"]).exit_code == 4
        c.exec_run(["true"], detach=True)
        events = _history(daemon, since, container=unique_name)
    finally:
        c.remove(force=True)
    attached = [
        e for e in events if e["Actor"]["Attributes"]["execID"] == events[0]["Actor"]["Attributes"]["execID"]
    ]
    assert _actions(attached) == ["exec_create: sh -c exit 4", "exec_start: sh -c exit 4", "exec_die"]
    assert attached[2]["Actor"]["Attributes"]["exitCode"] == "4"
    assert "exec_create: true " in _actions(events)  # dockerd's spacing: entrypoint, space, arguments
    prefix = _history(daemon, since, container=unique_name, event="exec_start")
    assert sorted(_actions(prefix)) == ["exec_start: sh -c exit 4", "exec_start: true "]


def test_sdk_image_events(daemon: Daemon, unique_name: str) -> None:
    client = daemon.client
    image = client.images.get("busybox")
    since = time.time()
    image.tag(unique_name, "one")
    client.images.remove(f"{unique_name}:one")
    client.images.prune()
    events = _history(daemon, since, type="image")
    mine = [e for e in events if e["Action"] != "prune"]
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in mine] == [
        ("tag", f"{unique_name}:one"), ("untag", image.id)
    ]  # fmt: skip
    assert all(e["Actor"]["ID"] == e["id"] == image.id and "from" not in e for e in mine)
    prune = [e for e in events if e["Action"] == "prune"]
    assert prune and prune[-1]["Actor"]["Attributes"]["reclaimed"] == "0" and prune[-1]["Actor"]["ID"] == ""
    # As dockerd: an untag names the image by id, so a filter on the reference sees only the tag.
    assert _actions(_history(daemon, since, image=unique_name)) == ["tag"]
    assert _actions(_history(daemon, since, image=image.id)) == ["tag", "untag"]
    assert _history(daemon, since, type="image", event="delete") == []


def test_import_and_delete_events(daemon: Daemon, unique_name: str) -> None:
    since = time.time()
    tar = subprocess.run(["tar", "-C", "/etc", "-c", "hostname"], capture_output=True, check=True).stdout
    daemon.cli("import", "-c", "LABEL team=red", "-", f"{unique_name}:v1", input=tar)
    image_id = daemon.client.images.get(f"{unique_name}:v1").id
    daemon.cli("rmi", f"{unique_name}:v1")
    events = _history(daemon, since, type="image", image=image_id)
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in events] == [
        ("import", image_id), ("untag", image_id), ("delete", image_id)
    ]  # fmt: skip
    assert events[0]["Actor"]["Attributes"]["team"] == "red"  # labels while the image exists
    assert "team" not in events[2]["Actor"]["Attributes"]
    assert _actions(_history(daemon, since, type="image", label="team=red")) == ["import", "untag"]


def test_label_filter_on_container_events(daemon: Daemon, unique_name: str) -> None:
    since = time.time()
    a = daemon.client.containers.create("busybox", name=unique_name, labels={"dockyard.owner": "alice"})
    b = daemon.client.containers.create("busybox", name=unique_name + "-b", labels={"dockyard.owner": "bob"})
    a.remove()
    b.remove()
    alice = _history(daemon, since, label="dockyard.owner=alice")
    assert [(e["Action"], e["Actor"]["ID"]) for e in alice] == [("create", a.id), ("destroy", a.id)]
    owned = _history(daemon, since, label="dockyard.owner", type="container")
    assert {e["Actor"]["ID"] for e in owned} == {a.id, b.id}


def test_until_in_the_future_ends_the_stream(daemon: Daemon, unique_name: str) -> None:
    started = time.monotonic()
    stream = daemon.api.events(until=time.time() + 1.5, filters={"container": unique_name}, decode=True)
    daemon.client.containers.create("busybox", name=unique_name).remove()
    assert _actions(list(stream)) == ["create", "destroy"]
    assert 1.0 < time.monotonic() - started < 10


def test_errors(daemon: Daemon) -> None:
    url = daemon.api._url("/events")  # the SDK's events() does not check the status: ask directly
    resp = daemon.api.get(url, params={"since": "20", "until": "10"})
    assert resp.status_code == 400
    assert resp.json()["message"] == "`since` time (20) cannot be after `until` time (10)"
    resp = daemon.api.get(url, params={"filters": "{bad"})
    assert resp.status_code == 400 and "invalid filter" in resp.json()["message"]
    resp = daemon.api.get(url, params={"since": "yesterday"})
    assert resp.status_code == 400


# -- a client that stops reading ----------------------------------------------------------------------------
def _raw_events(daemon: Daemon, query: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the daemon feels it soon
    s.connect(str(daemon.socket))
    s.sendall(f"GET /v1.47/events?{query} HTTP/1.1\r\nHost: d\r\n\r\n".encode())
    return s


def _read_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.slow
def test_slow_reader_is_dropped_and_the_daemon_keeps_going(daemon: Daemon, unique_name: str) -> None:
    # Big events (container events carry the labels) fill the sockets' buffers after a few dozen; each
    # resize of a running container is one cheap event.
    c = daemon.client.containers.run(
        "busybox", ["sleep", "600"], name=unique_name, detach=True, labels={"pad": "x" * 8000}
    )
    slow = _raw_events(daemon, "filters=" + urllib.parse.quote(json.dumps({"container": [unique_name]})))
    try:
        started = time.monotonic()
        for _ in range(1500):  # more than the daemon queues for one subscriber (1024) plus the sockets hold
            daemon.api.resize(c.id, 24, 80)
        assert time.monotonic() - started < 60
        assert daemon.ping()
        body = _read_all(slow, timeout=30)  # the stream was ended, not left to grow
        assert body.startswith(b"HTTP/1.1 200") and body.endswith(b"\r\n0\r\n\r\n")
        assert 0 < body.count(b'"Action":"resize"') < 1500
        assert "dropping a subscriber" in daemon.log_path.read_text()
    finally:
        slow.close()
        c.remove(force=True)
