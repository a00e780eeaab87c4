"""``docker ps`` and ``GET /containers/json``: all, last, quiet, size, and every filter."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import docker.errors
import pytest

from tests.conftest import Daemon


@dataclass
class Fleet:
    """Three containers made in order under one label: exited 0, exited 3, running."""

    label: str
    ok: str
    failed: str
    running: str


@pytest.fixture
def fleet(daemon: Daemon) -> Iterator[Fleet]:
    label = "fleet=" + os.urandom(4).hex()
    ids = []
    for cmd in (["true"], ["sh", "-c", "exit 3"], ["sleep", "60"]):
        ids.append(daemon.cli("run", "-d", "-l", label, "-l", "role=r" + str(len(ids)), "busybox", *cmd)
                   .stdout.decode().strip())  # fmt: skip
    for cid in ids[:2]:
        daemon.api.wait(cid)
    yield Fleet(label, *ids)
    for cid in ids:
        daemon.api.remove_container(cid, force=True)


def ps(daemon: Daemon, *args: str) -> list[str]:
    """``docker ps -q --no-trunc`` ids."""
    return daemon.cli("ps", "-q", "--no-trunc", *args).stdout.decode().split()


def test_ps_running_only(daemon: Daemon, fleet: Fleet) -> None:
    assert ps(daemon, "--filter", "label=" + fleet.label) == [fleet.running]


def test_ps_all_newest_first(daemon: Daemon, fleet: Fleet) -> None:
    assert ps(daemon, "-a", "--filter", "label=" + fleet.label) == [fleet.running, fleet.failed, fleet.ok]


def test_ps_last(daemon: Daemon, fleet: Fleet) -> None:
    assert ps(daemon, "-n", "2", "--filter", "label=" + fleet.label) == [fleet.running, fleet.failed]
    assert ps(daemon, "--last", "1", "--filter", "label=" + fleet.label) == [fleet.running]
    assert ps(daemon, "-l", "--filter", "label=" + fleet.label) == [fleet.running]


def test_ps_quiet_short_ids(daemon: Daemon, fleet: Fleet) -> None:
    out = daemon.cli("ps", "-q", "--filter", "label=" + fleet.label).stdout.decode().split()
    assert out == [fleet.running[:12]]


def test_ps_table(daemon: Daemon, fleet: Fleet) -> None:
    out = daemon.cli("ps", "-a", "--filter", "label=" + fleet.label).stdout.decode().splitlines()
    assert out[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert "Up " in rows[fleet.running[:12]]
    assert "Exited (3)" in rows[fleet.failed[:12]]
    assert '"sleep 60"' in rows[fleet.running[:12]]


def test_ps_size(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "--name", unique_name, "busybox", "sh", "-c", "head -c 200000 /dev/zero > /f")
    rows = daemon.api.containers(all=True, size=True, filters={"name": unique_name})
    assert rows[0]["SizeRw"] >= 200000
    out = daemon.cli("ps", "-a", "-s", "--filter", "name=" + unique_name, "--format", "{{.Size}}").stdout
    assert out.decode().startswith(("200kB", "201kB", "204kB", "205kB", "209kB", "213kB"))


def test_filter_id(daemon: Daemon, fleet: Fleet) -> None:
    assert ps(daemon, "-a", "--filter", "id=" + fleet.failed[:8]) == [fleet.failed]


def test_filter_name(daemon: Daemon, unique_name: str) -> None:
    cid = daemon.cli("create", "--name", unique_name, "busybox").stdout.decode().strip()
    assert ps(daemon, "-a", "--filter", "name=" + unique_name) == [cid]
    assert ps(daemon, "-a", "--filter", "name=^/" + unique_name + "$") == [cid]
    assert ps(daemon, "-a", "--filter", "name=" + unique_name + "-nope") == []


def test_filter_label_key_and_value(daemon: Daemon, fleet: Fleet) -> None:
    key = fleet.label.split("=")[0]
    assert fleet.running in ps(daemon, "-a", "--filter", "label=" + key)
    both = ps(daemon, "-a", "--filter", "label=" + fleet.label, "--filter", "label=role=r1")
    assert both == [fleet.failed]
    assert ps(daemon, "-a", "--filter", "label=" + fleet.label, "--filter", "label=role=zz") == []


def test_filter_status(daemon: Daemon, fleet: Fleet) -> None:
    lbl = "label=" + fleet.label
    assert ps(daemon, "--filter", lbl, "--filter", "status=exited") == [fleet.failed, fleet.ok]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "status=running") == [fleet.running]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "status=created") == []


def test_filter_exited(daemon: Daemon, fleet: Fleet) -> None:
    lbl = "label=" + fleet.label
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "exited=3") == [fleet.failed]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "exited=0") == [fleet.ok]


def test_filter_ancestor(daemon: Daemon, fleet: Fleet) -> None:
    lbl = "label=" + fleet.label
    every = [fleet.running, fleet.failed, fleet.ok]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "ancestor=busybox") == every
    image_id = daemon.api.inspect_image("busybox")["Id"]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "ancestor=" + image_id) == every
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "ancestor=hello-world") == []


def test_filter_before_since(daemon: Daemon, fleet: Fleet) -> None:
    lbl = "label=" + fleet.label
    before = ps(daemon, "-a", "--filter", lbl, "--filter", "before=" + fleet.running)
    assert before == [fleet.failed, fleet.ok]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "since=" + fleet.ok) == [fleet.running, fleet.failed]
    assert ps(daemon, "--filter", lbl, "--filter", "since=" + fleet.ok) == [fleet.running]


def test_invalid_filters(daemon: Daemon) -> None:
    for filters in ({"foo": ["a"]}, {"status": ["bogus"]}, {"exited": ["x"]}):
        with pytest.raises(docker.errors.APIError) as err:
            daemon.api.containers(all=True, filters=filters)
        assert err.value.status_code == 400
        assert "nvalid filter" in str(err.value.explanation)
    resp = daemon.api.get(daemon.api._url("/containers/json"), params={"filters": "{not json"})
    assert resp.status_code == 400


def test_filter_before_unknown_container(daemon: Daemon) -> None:
    with pytest.raises(docker.errors.NotFound):
        daemon.api.containers(all=True, filters={"before": "nosuch-container-xyz"})


def test_summary_shape(daemon: Daemon, fleet: Fleet) -> None:
    rows = daemon.api.containers(all=True, filters={"id": fleet.running})
    assert len(rows) == 1
    row = rows[0]
    assert set(row) >= {"Id", "Names", "Image", "ImageID", "Command", "Created", "Ports", "Labels", "State",
                        "Status", "HostConfig", "NetworkSettings", "Mounts"}  # fmt: skip
    assert row["State"] == "running"
    assert row["Command"] == "sleep 60"
    assert row["Image"] == "busybox"
    assert json.loads(json.dumps(row["Labels"]))["role"] == "r2"


def test_filter_network(daemon: Daemon) -> None:
    mark = "net=" + os.urandom(4).hex()
    default = daemon.cli("create", "-l", mark, "busybox").stdout.decode().strip()
    none = daemon.cli("create", "-l", mark, "--network", "none", "busybox").stdout.decode().strip()
    host = daemon.cli("create", "-l", mark, "--network", "host", "busybox").stdout.decode().strip()
    lbl = "label=" + mark
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "network=none") == [none]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "network=host") == [host]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "network=bridge") == [default]


def test_filter_volume(daemon: Daemon) -> None:
    mark = "vol=" + os.urandom(4).hex()
    bound = daemon.cli("create", "-l", mark, "-v", "/tmp:/data", "busybox").stdout.decode().strip()
    daemon.cli("create", "-l", mark, "busybox")
    lbl = "label=" + mark
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "volume=/data") == [bound]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "volume=/tmp") == [bound]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "volume=/elsewhere") == []


def test_filter_expose_health_is_task(daemon: Daemon) -> None:
    mark = "exp=" + os.urandom(4).hex()
    exposed = daemon.cli("create", "-l", mark, "--expose", "8080", "busybox").stdout.decode().strip()
    plain = daemon.cli("create", "-l", mark, "busybox").stdout.decode().strip()
    lbl = "label=" + mark
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "expose=8080/tcp") == [exposed]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "expose=8080") == [exposed]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "health=none") == [plain, exposed]
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "health=healthy") == []
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "is-task=true") == []
    assert ps(daemon, "-a", "--filter", lbl, "--filter", "is-task=false") == [plain, exposed]
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.containers(all=True, filters={"health": ["bogus"]})
    assert err.value.status_code == 400
