"""The OCI runtime adapter against the real runtime and conmon (root only)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from dockyard.errors import NotFound, SystemFailure
from dockyard.runtime.base import AttachStream, RuntimeStatus
from dockyard.runtime.oci import OciRuntime
from tests.integration.runtime.runtime_harness import Harness, make_runtime

pytestmark = pytest.mark.root


def test_echo_logs_and_exit_code(harness: Harness) -> None:
    setup = harness.setup(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
    pid = harness.run(harness.create(setup))
    assert pid > 0
    harness.run(harness.runtime.start(setup.id))
    status = harness.run(harness.runtime.wait(setup.id))
    assert status.exit_code == 3
    assert not status.oom_killed
    assert abs(status.finished_at - time.time()) < 30
    assert sorted(harness.log_lines(setup)) == [("stderr", "oops"), ("stdout", "hi")]


async def _drain(stream: AttachStream) -> list[tuple[int, bytes]]:
    chunks = []
    while (chunk := await stream.read()) is not None:
        chunks.append(chunk)
    stream.close()
    return chunks


def _joined(chunks: list[tuple[int, bytes]], which: int = 1) -> bytes:
    return b"".join(data for stream, data in chunks if stream == which)


def test_kill_reports_128_plus_signal(harness: Harness) -> None:
    setup = harness.setup(["sleep", "100"])
    harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))
    harness.run(harness.runtime.kill(setup.id, signal.SIGKILL))
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 128 + signal.SIGKILL


def test_trapped_signal_exit_code(harness: Harness) -> None:
    setup = harness.setup(["sh", "-c", 'trap "exit 7" TERM; echo ready; while true; do sleep 0.05; done'])
    harness.run(harness.create(setup))
    stream = harness.run(harness.runtime.attach(setup.id))
    harness.run(harness.runtime.start(setup.id))
    assert harness.run(stream.read()) == (1, b"ready\n")
    harness.run(harness.runtime.kill(setup.id, signal.SIGTERM))
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 7
    stream.close()


def _freezer_state(cid: str) -> str:
    v1 = Path(f"/sys/fs/cgroup/freezer/dockyard/{cid}/freezer.state")
    if v1.exists():
        return v1.read_text().strip()
    frozen = Path(f"/sys/fs/cgroup/dockyard/{cid}/cgroup.freeze").read_text().strip()
    return "FROZEN" if frozen == "1" else "THAWED"


def test_pause_resume_and_pids(harness: Harness) -> None:
    setup = harness.setup(["sleep", "100"])
    init = harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))
    assert harness.run(harness.runtime.pids(setup.id)) == [init]
    harness.run(harness.runtime.pause(setup.id))
    assert _freezer_state(setup.id) == "FROZEN"
    harness.run(harness.runtime.resume(setup.id))
    assert _freezer_state(setup.id) == "THAWED"


def test_tty_output_through_attach(harness: Harness) -> None:
    setup = harness.setup(["sh", "-c", "tty; echo hello"], tty=True)
    harness.run(harness.create(setup))
    stream = harness.run(harness.runtime.attach(setup.id))
    harness.run(harness.runtime.start(setup.id))
    out = _joined(harness.run(_drain(stream)))
    assert out == b"/dev/pts/0\r\nhello\r\n"
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 0


def test_stdin_then_close_ends_cat(harness: Harness) -> None:
    setup = harness.setup(["cat"], open_stdin=True)
    harness.run(harness.create(setup))
    stream = harness.run(harness.runtime.attach(setup.id))
    harness.run(harness.runtime.start(setup.id))
    harness.run(stream.write_stdin(b"abc\n" + b"x" * 20000))
    harness.run(stream.close_stdin())
    assert _joined(harness.run(_drain(stream))) == b"abc\n" + b"x" * 20000
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 0


def test_stdin_stays_open_across_attaches_without_stdin_once(harness: Harness) -> None:
    setup = harness.setup(["cat"], open_stdin=True, stdin_once=False)
    harness.run(harness.create(setup))
    first = harness.run(harness.runtime.attach(setup.id))
    harness.run(harness.runtime.start(setup.id))
    harness.run(first.write_stdin(b"one\n"))
    assert harness.run(first.read()) == (1, b"one\n")
    harness.run(first.close_stdin())
    first.close()
    second = harness.run(harness.runtime.attach(setup.id))
    harness.run(second.write_stdin(b"two\n"))
    assert harness.run(second.read()) == (1, b"two\n")
    harness.run(harness.runtime.kill(setup.id, signal.SIGKILL))
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 137
    second.close()


def test_wait_resolves_when_deleted_while_running(harness: Harness) -> None:
    setup = harness.setup(["sleep", "100"])
    harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))

    async def wait_and_delete() -> int:
        waiter = asyncio.ensure_future(harness.runtime.wait(setup.id))
        await harness.runtime.delete(setup.id)
        return (await waiter).exit_code

    assert harness.run(wait_and_delete()) in (137, 255)


def test_resize_sets_tty_size(harness: Harness) -> None:
    # conmon applies a resize asynchronously (ctl fifo, then winsz fifo), so ask again until it shows.
    setup = harness.setup(["sh", "-c", "while read x; do stty size; done"], tty=True, open_stdin=True)
    harness.run(harness.create(setup))
    stream = harness.run(harness.runtime.attach(setup.id))
    harness.run(harness.runtime.start(setup.id))
    harness.run(harness.runtime.resize(setup.id, 31, 101))

    async def ask_until_resized() -> bool:
        seen = b""
        for _ in range(50):
            await stream.write_stdin(b"\n")
            chunk = await stream.read()
            seen += chunk[1] if chunk else b""
            if b"31 101" in seen:
                return True
        return False

    assert harness.run(ask_until_resized())
    stream.close()


def test_missing_command_fails_with_runtime_text(harness: Harness) -> None:
    setup = harness.setup(["nosuch"])

    async def create_and_start() -> None:
        await harness.create(setup)
        await harness.runtime.start(setup.id)

    with pytest.raises(SystemFailure) as caught:
        harness.run(create_and_start())
    assert "nosuch" in caught.value.message
    assert "not found" in caught.value.message or "No such file" in caught.value.message


def _cgroup_file(controller: str, cid: str, v1_name: str, v2_name: str) -> str:
    v1 = Path(f"/sys/fs/cgroup/{controller}/dockyard/{cid}/{v1_name}")
    path = v1 if v1.exists() else Path(f"/sys/fs/cgroup/dockyard/{cid}/{v2_name}")
    return path.read_text().strip()


def test_resource_limits_in_cgroup(harness: Harness) -> None:
    setup = harness.setup(
        ["sleep", "100"], memory=64 * 1024 * 1024, pids_limit=50, cpu_shares=512, nano_cpus=500_000_000
    )
    harness.run(harness.create(setup))
    cid = setup.id
    assert _cgroup_file("memory", cid, "memory.limit_in_bytes", "memory.max") == str(64 * 1024 * 1024)
    assert _cgroup_file("pids", cid, "pids.max", "pids.max") == "50"
    quota = _cgroup_file("cpu", cid, "cpu.cfs_quota_us", "cpu.max")
    assert quota.split()[0] == "50000"
    if Path(f"/sys/fs/cgroup/cpu/dockyard/{cid}").exists():
        assert _cgroup_file("cpu", cid, "cpu.shares", "") == "512"


def test_oom_kill_is_reported(harness: Harness) -> None:
    setup = harness.setup(
        ["sh", "-c", "tail /dev/zero"], memory=16 * 1024 * 1024, memory_swap=16 * 1024 * 1024
    )
    harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))
    status = harness.run(harness.runtime.wait(setup.id))
    assert status.exit_code == 137
    assert status.oom_killed


def test_adopt_running_container_after_restart(harness: Harness) -> None:
    setup = harness.setup(["sh", "-c", 'trap "exit 7" TERM; while true; do sleep 0.05; done'])
    init = harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))
    harness.runtime = harness.run(_new_runtime(harness))
    assert harness.run(harness.runtime.adopt(setup.id, setup.bundle)) is RuntimeStatus.RUNNING
    assert init in harness.run(harness.runtime.pids(setup.id))
    harness.run(harness.runtime.kill(setup.id, signal.SIGTERM))
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 7


def test_adopt_container_that_exited_meanwhile(harness: Harness) -> None:
    setup = harness.setup(["sh", "-c", "exit 5"])
    harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))
    harness.run(harness.runtime.wait(setup.id))
    harness.runtime = harness.run(_new_runtime(harness))
    assert harness.run(harness.runtime.adopt(setup.id, setup.bundle)) is RuntimeStatus.STOPPED
    assert harness.run(harness.runtime.wait(setup.id)).exit_code == 5


def test_adopt_unknown_container(harness: Harness) -> None:
    bundle = harness.base / "gone"
    bundle.mkdir()
    assert harness.run(harness.runtime.adopt("f" * 64, bundle)) is None


def test_delete_is_idempotent(harness: Harness) -> None:
    setup = harness.setup(["true"])
    harness.run(harness.create(setup))
    harness.run(harness.runtime.start(setup.id))
    harness.run(harness.runtime.wait(setup.id))
    harness.run(harness.runtime.delete(setup.id))
    harness.run(harness.runtime.delete(setup.id))
    assert not (setup.bundle / "attach").exists()
    with pytest.raises(NotFound):
        harness.run(harness.runtime.wait(setup.id))
    with pytest.raises(NotFound):
        harness.run(harness.runtime.kill(setup.id, signal.SIGKILL))


def test_lifecycle_of_true_is_fast(harness: Harness) -> None:
    async def once() -> float:
        setup = harness.setup(["true"])
        began = time.perf_counter()
        await harness.create(setup)
        await harness.runtime.start(setup.id)
        assert (await harness.runtime.wait(setup.id)).exit_code == 0
        await harness.runtime.delete(setup.id)
        return time.perf_counter() - began

    timings = sorted(harness.run(once()) for _ in range(5))
    print(f"create+start+wait+delete of true ({harness.runtime.name}): median {timings[2] * 1000:.0f} ms")
    assert timings[2] < 1.0


async def _new_runtime(harness: Harness) -> OciRuntime:
    # A new object on the same state root: what a restarted daemon builds.
    return make_runtime(harness.base)
