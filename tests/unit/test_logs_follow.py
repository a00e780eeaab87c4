"""Following k8s-file logs: backlog, appends, partial lines, stop, rotation, truncation, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from dockyard.logs.follow import follow_logs
from dockyard.logs.records import LogRecord
from tests.unit.test_logs_reader import BASE, line

TIMEOUT = 5.0


def append(path: Path, *lines: bytes) -> None:
    with path.open("ab") as f:
        f.write(b"".join(lines))


class Collector:
    """Consumes a follower in a task, so a test can write and then wait for what arrives."""

    def __init__(self, records: AsyncIterator[LogRecord]) -> None:
        self.queue: asyncio.Queue[LogRecord | None] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run(records))

    async def _run(self, records: AsyncIterator[LogRecord]) -> None:
        async for record in records:
            await self.queue.put(record)
        await self.queue.put(None)

    async def take(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(n):
            record = await asyncio.wait_for(self.queue.get(), TIMEOUT)
            assert record is not None, f"follower ended after {out}"
            out.append(record.data)
        return out

    async def rest(self) -> list[bytes]:
        """Everything until the follower ends (it must end)."""
        out = []
        while (record := await asyncio.wait_for(self.queue.get(), TIMEOUT)) is not None:
            out.append(record.data)
        await asyncio.wait_for(self.task, TIMEOUT)
        return out


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def test_backlog_then_appends_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(line(0, "stdout", "F", "old"))

    async def main() -> None:
        stopped = asyncio.Event()
        c = Collector(follow_logs(path, stopped=stopped))
        assert await c.take(1) == [b"old\n"]
        append(path, line(1, "stderr", "F", "new"))
        assert await c.take(1) == [b"new\n"]
        append(path, line(2, "stdout", "P", "a"), line(3, "stdout", "F", "b"))
        assert await c.take(1) == [b"ab\n"]
        append(path, line(4, "stdout", "F", "last"), line(5, "stdout", "P", "no newline"))
        stopped.set()
        assert await c.rest() == [b"last\n", b"no newline"]

    run(main)


def test_tail_and_stream_filter(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(
        b"".join(line(i, "stdout", "F", str(i)) for i in range(100)) + line(100, "stderr", "F", "e")
    )

    async def main() -> None:
        stopped = asyncio.Event()
        c = Collector(follow_logs(path, tail=2, stderr=False, stopped=stopped))
        assert await c.take(2) == [b"98\n", b"99\n"]
        append(path, line(101, "stderr", "F", "skip"), line(102, "stdout", "F", "keep"))
        assert await c.take(1) == [b"keep\n"]
        stopped.set()
        assert await c.rest() == []

    run(main)


def test_already_stopped_reads_everything_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(b"".join(line(i, "stdout", "F", str(i)) for i in range(5000)))

    async def main() -> None:
        stopped = asyncio.Event()
        stopped.set()
        got = [r.data async for r in follow_logs(path, since_ns=BASE + 4990, stopped=stopped)]
        assert got == [f"{i}\n".encode() for i in range(4990, 5000)]

    run(main)


def test_waits_for_the_file_to_appear(tmp_path: Path) -> None:
    path = tmp_path / "later.log"

    async def main() -> None:
        stopped = asyncio.Event()
        c = Collector(follow_logs(path, stopped=stopped))
        await asyncio.sleep(0.05)
        append(path, line(0, "stdout", "F", "hello"))
        assert await c.take(1) == [b"hello\n"]
        stopped.set()
        assert await c.rest() == []

    run(main)


def test_rotation_by_rename_continues_in_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(line(0, "stdout", "F", "one"))

    async def main() -> None:
        stopped = asyncio.Event()
        c = Collector(follow_logs(path, stopped=stopped))
        assert await c.take(1) == [b"one\n"]
        # conmon's --log-size-max: finish the old file, write <log>.tmp, rename it over the log.
        append(path, line(1, "stdout", "F", "two"))
        tmp = tmp_path / "c.log.tmp"
        tmp.write_bytes(b"")
        os.rename(tmp, path)
        append(path, line(2, "stdout", "F", "three"))
        assert await c.take(2) == [b"two\n", b"three\n"]
        append(path, line(3, "stdout", "F", "four"))
        assert await c.take(1) == [b"four\n"]
        stopped.set()
        assert await c.rest() == []

    run(main)


def test_truncation_restarts_from_the_beginning(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(line(0, "stdout", "F", "a-long-first-line"))

    async def main() -> None:
        stopped = asyncio.Event()
        c = Collector(follow_logs(path, stopped=stopped))
        assert await c.take(1) == [b"a-long-first-line\n"]
        with path.open("r+b") as f:
            f.truncate(0)
            f.write(line(1, "stdout", "F", "b"))
        assert await c.take(1) == [b"b\n"]
        stopped.set()
        assert await c.rest() == []

    run(main)


def test_until_ends_the_follow(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(line(0, "stdout", "F", "in"))

    async def main() -> None:
        never = asyncio.Event()
        c = Collector(follow_logs(path, until_ns=BASE + 10, stopped=never))
        assert await c.take(1) == [b"in\n"]
        append(path, line(20, "stdout", "F", "after"))
        assert await c.rest() == []

        soon = time.time_ns() + 200_000_000
        started = time.monotonic()
        c = Collector(follow_logs(path, until_ns=soon, stopped=never))
        assert await c.rest() == [b"in\n", b"after\n"]  # the follow ends when the clock passes until
        assert time.monotonic() - started >= 0.15

    run(main)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_consumer_leaving_releases_everything(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(b"".join(line(i, "stdout", "F", str(i)) for i in range(3)))

    async def main() -> None:
        before = _open_fds()
        baseline = asyncio.all_tasks()
        stopped = asyncio.Event()
        async with contextlib.aclosing(follow_logs(path, stopped=stopped)) as records:
            async for record in records:
                if record.data == b"1\n":
                    break
        assert _open_fds() == before
        assert await _settled(baseline)

        # A consumer cancelled while the follower waits for new output.
        c = Collector(follow_logs(path, stopped=stopped))
        assert await c.take(3) == [b"0\n", b"1\n", b"2\n"]
        c.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await c.task
        assert _open_fds() == before
        assert await _settled(baseline)

    run(main)


async def _settled(baseline: set[asyncio.Task[object]]) -> bool:
    """True once only the test's own tasks remain (cancelled helpers need a loop turn or two to finish)."""
    for _ in range(10):
        await asyncio.sleep(0)
        if asyncio.all_tasks() <= baseline:
            return True
    raise AssertionError(f"leaked tasks: {asyncio.all_tasks()}")
