"""start/stop/kill/restart/rename/pause/top/prune through the docker CLI and the SDK."""

from __future__ import annotations

import os
import time

import docker.errors
import pytest
import requests

from tests.conftest import Daemon, poll


def state(daemon: Daemon, ref: str) -> dict[str, object]:
    """``State`` of inspect."""
    return dict(daemon.api.inspect_container(ref)["State"])


def logs(daemon: Daemon, ref: str) -> str:
    """The container's combined output so far."""
    return daemon.cli("logs", ref).stdout.decode()


def run_d(daemon: Daemon, *args: str) -> str:
    """``docker run -d ARGS`` → id."""
    return daemon.cli("run", "-d", *args).stdout.decode().strip()


def url(daemon: Daemon, path: str, *args: str) -> str:
    """Versioned URL for a raw SDK request."""
    return str(daemon.api._url(path, *args))


def test_start_running_is_304(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sleep", "60")
    resp = daemon.api.post(url(daemon, "/containers/{0}/start", cid))
    assert resp.status_code == 304
    daemon.api.start(cid)  # docker-py treats 304 as success
    assert daemon.cli("start", cid).returncode == 0
    daemon.api.remove_container(cid, force=True)


def test_stop_stopped_is_304(daemon: Daemon) -> None:
    cid = daemon.cli("create", "busybox").stdout.decode().strip()
    resp = daemon.api.post(url(daemon, "/containers/{0}/stop", cid))
    assert resp.status_code == 304
    daemon.api.stop(cid)
    assert daemon.cli("stop", cid).stdout.decode().strip() == cid


def test_stop_timeout_kills_process_ignoring_sigterm(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done")
    poll(lambda: "ready" in logs(daemon, cid))
    t0 = time.monotonic()
    daemon.cli("stop", "-t", "1", cid)
    took = time.monotonic() - t0
    assert 0.9 <= took < 5, took
    st = state(daemon, cid)
    assert st["ExitCode"] == 137
    assert st["Status"] == "exited"


def test_stop_graceful_exit_code(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done")
    poll(lambda: "ready" in logs(daemon, cid))
    t0 = time.monotonic()
    daemon.cli("stop", cid)
    assert time.monotonic() - t0 < 5
    assert state(daemon, cid)["ExitCode"] == 42


def test_stop_signal_option(daemon: Daemon) -> None:
    script = "trap 'echo got-usr1; exit 9' USR1; trap '' TERM; echo ready; while :; do sleep 0.1; done"
    cid = run_d(daemon, "--stop-signal", "SIGUSR1", "busybox", "sh", "-c", script)
    assert daemon.api.inspect_container(cid)["Config"]["StopSignal"] == "SIGUSR1"
    poll(lambda: "ready" in logs(daemon, cid))
    daemon.cli("stop", "-t", "20", cid)
    assert state(daemon, cid)["ExitCode"] == 9
    assert "got-usr1" in logs(daemon, cid)


def test_kill_with_signal_is_delivered(daemon: Daemon) -> None:
    script = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done"
    cid = run_d(daemon, "busybox", "sh", "-c", script)
    poll(lambda: "ready" in logs(daemon, cid))
    daemon.cli("kill", "-s", "USR1", cid)
    poll(lambda: "got-usr1" in logs(daemon, cid))
    assert state(daemon, cid)["Running"] is True
    daemon.cli("kill", cid)
    st = state(daemon, cid)
    assert st["Status"] == "exited"
    assert st["ExitCode"] == 137


def test_kill_stopped_is_409(daemon: Daemon) -> None:
    cid = daemon.cli("create", "busybox").stdout.decode().strip()
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.kill(cid)
    assert err.value.status_code == 409
    assert err.value.explanation == f"Cannot kill container: {cid}: Container {cid} is not running"
    proc = daemon.cli("kill", cid[:12], check=False)
    assert proc.returncode == 1
    assert b"is not running" in proc.stderr


def test_kill_bad_signal_is_400(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sleep", "60")
    resp = daemon.api.post(url(daemon, "/containers/{0}/kill", cid), params={"signal": "SIGNOPE"})
    assert resp.status_code == 400
    daemon.api.remove_container(cid, force=True)


def test_restart_changes_started_at(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sleep", "60")
    first = state(daemon, cid)
    daemon.cli("restart", "-t", "0", cid)
    second = state(daemon, cid)
    assert second["Running"] is True
    assert second["StartedAt"] != first["StartedAt"]
    assert str(second["StartedAt"]) > str(first["StartedAt"])
    assert second["Pid"] != first["Pid"]
    daemon.api.remove_container(cid, force=True)


def test_restart_of_exited_container(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "echo", "hello")
    daemon.api.wait(cid)
    daemon.cli("restart", cid)
    daemon.api.wait(cid)
    assert logs(daemon, cid) == "hello\nhello\n"


def test_rename(daemon: Daemon, unique_name: str) -> None:
    cid = daemon.cli("create", "--name", unique_name, "busybox").stdout.decode().strip()
    daemon.cli("rename", unique_name, unique_name + "-new")
    assert daemon.api.inspect_container(cid)["Name"] == "/" + unique_name + "-new"
    with pytest.raises(docker.errors.NotFound):
        daemon.api.inspect_container(unique_name)
    other = daemon.cli("create", "--name", unique_name, "busybox").stdout.decode().strip()
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.rename(other, unique_name + "-new")
    assert err.value.status_code == 409
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.rename(other, "b@d")
    assert err.value.status_code == 400


def test_pause_unpause(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sh", "-c", "while :; do sleep 0.05; done")
    daemon.cli("pause", cid)
    st = state(daemon, cid)
    assert st["Status"] == "paused"
    assert st["Paused"] is True
    assert st["Running"] is True
    top = daemon.cli("top", cid).stdout.decode()
    assert "sh -c" in top
    frozen = daemon.api.top(cid)["Processes"]
    assert frozen
    ps_row = daemon.cli("ps", "--filter", "id=" + cid, "--format", "{{.Status}}").stdout.decode()
    assert "(Paused)" in ps_row
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.pause(cid)
    assert err.value.status_code == 409
    daemon.cli("unpause", cid)
    assert state(daemon, cid)["Status"] == "running"
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.unpause(cid)
    assert err.value.status_code == 409
    daemon.cli("kill", cid)
    assert state(daemon, cid)["ExitCode"] == 137


def test_unpause_resumes_output(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sh", "-c", "while :; do echo tick; sleep 0.05; done")
    poll(lambda: "tick" in logs(daemon, cid))
    daemon.cli("pause", cid)
    n = logs(daemon, cid).count("tick")
    time.sleep(0.3)  # a window in which a running loop would print ~6 more lines
    assert logs(daemon, cid).count("tick") <= n + 1
    daemon.cli("unpause", cid)
    poll(lambda: logs(daemon, cid).count("tick") > n + 2)
    daemon.api.remove_container(cid, force=True)


def test_top(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sleep", "61")
    out = daemon.cli("top", cid).stdout.decode().splitlines()
    assert "PID" in out[0] and "CMD" in out[0]
    assert any("sleep 61" in line for line in out[1:])
    assert len(out) == 2
    custom = daemon.api.top(cid, ps_args="-o pid,comm")
    assert custom["Titles"] == ["PID", "COMMAND"]
    assert custom["Processes"][0][1] == "sleep"
    cli = daemon.cli("top", cid, "-o", "pid,args").stdout.decode()
    assert "sleep 61" in cli
    daemon.api.remove_container(cid, force=True)
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.top(daemon.cli("create", "busybox").stdout.decode().strip())
    assert err.value.status_code == 409


def test_prune_removes_only_stopped(fresh_daemon: Daemon) -> None:
    d = fresh_daemon
    running = run_d(d, "busybox", "sleep", "60")
    exited = run_d(d, "busybox", "true")
    created = d.cli("create", "busybox").stdout.decode().strip()
    d.api.wait(exited)
    out = d.cli("container", "prune", "-f").stdout.decode()
    assert exited in out and created in out
    assert "Total reclaimed space" in out
    assert [c["Id"] for c in d.api.containers(all=True)] == [running]


def test_prune_label_filter(daemon: Daemon) -> None:
    mark = "prune=" + os.urandom(4).hex()
    keep = daemon.cli("create", "busybox").stdout.decode().strip()
    gone = daemon.cli("create", "-l", mark, "busybox").stdout.decode().strip()
    result = daemon.api.prune_containers(filters={"label": [mark]})
    assert result["ContainersDeleted"] == [gone]
    ids = [c["Id"] for c in daemon.api.containers(all=True)]
    assert keep in ids and gone not in ids
    out = daemon.cli("container", "prune", "-f", "--filter", "label=" + mark).stdout.decode()
    assert "Total reclaimed space: 0B" in out
    daemon.api.remove_container(keep)


def test_remove_running_needs_force(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sleep", "60")
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.remove_container(cid)
    assert err.value.status_code == 409
    assert "stop the container before removing or force remove" in str(err.value.explanation)
    daemon.cli("rm", "-f", cid)
    with pytest.raises(docker.errors.NotFound):
        daemon.api.inspect_container(cid)
    resp = daemon.api.delete(url(daemon, "/containers/{0}", cid))
    assert isinstance(resp, requests.Response) and resp.status_code == 404


def test_restart_policy_on_failure_retries(daemon: Daemon) -> None:
    cid = run_d(daemon, "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 1")

    def done() -> bool:
        info = daemon.api.inspect_container(cid)
        return bool(info["RestartCount"] == 2 and info["State"]["Status"] == "exited")

    poll(done, timeout=20)
    assert logs(daemon, cid) == "run\nrun\nrun\n"
    assert state(daemon, cid)["ExitCode"] == 1


def test_restart_policy_always_then_stop(daemon: Daemon) -> None:
    cid = run_d(daemon, "--restart", "always", "busybox", "sh", "-c", "echo run; sleep 0.2")
    poll(lambda: logs(daemon, cid).count("run") >= 2, timeout=20)
    daemon.cli("stop", "-t", "1", cid)
    st = state(daemon, cid)
    assert st["Status"] == "exited"
    count = logs(daemon, cid).count("run")
    time.sleep(0.5)  # a restart would come within the backoff (at most a few hundred ms here)
    assert state(daemon, cid)["Status"] == "exited"
    assert logs(daemon, cid).count("run") == count


def test_stop_and_remove_paused_container(daemon: Daemon) -> None:
    cid = run_d(daemon, "busybox", "sleep", "60")
    daemon.cli("pause", cid)
    with pytest.raises(docker.errors.APIError) as err:
        daemon.api.remove_container(cid)
    assert err.value.status_code == 409
    assert "container is paused and must be unpaused first" in str(err.value.explanation)
    t0 = time.monotonic()
    daemon.cli("stop", "-t", "1", cid)
    assert time.monotonic() - t0 < 5
    st = state(daemon, cid)
    assert st["Status"] == "exited" and st["Paused"] is False
    other = run_d(daemon, "busybox", "sleep", "60")
    daemon.cli("pause", other)
    daemon.cli("rm", "-f", other, timeout=20)
    with pytest.raises(docker.errors.NotFound):
        daemon.api.inspect_container(other)
