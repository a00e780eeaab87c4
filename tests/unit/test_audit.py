"""The audit log: hash chain, rotation, verification of tampering, failure reporting, rate limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.api.middleware.ratelimit import RateLimiter
from dockyard.errors import TooManyRequests
from dockyard.security.audit import GENESIS, ChainFile, line_hash, log_files, read_records, verify
from dockyard.security.audit_pipe import AuditLog
from dockyard.security.audit_records import RecordBuffer, Shape
from dockyard.security.audit_writer import CHUNK, Writer, frame, take_frames
from dockyard.security.identity import Identity
from dockyard.security.policy import Limits

CALLER = Identity("unix", uid=0, gid=0, pid=1, user="root").audit_json


def _shape(i: int, durable: bool = False, path: str = "") -> Shape:
    return ("start" if durable else "done", CALLER, "POST" if durable else "GET", path or f"/x/{'x' * 50}",
            "SystemPing", str(i), ("allow", "admins", ""))  # fmt: skip


def _add(log: AuditLog, i: int, path: str = "") -> None:
    """Queue record ``i``, a read's ``done`` record."""
    log.add(_shape(i, path=path), f"{i:x}", 200, 2, time.monotonic() - 0.001)


def _add_durable(log: AuditLog, i: int, path: str = "") -> asyncio.Future[None]:
    """Queue record ``i``, a mutating call's ``start`` record; done when it is on disk."""
    return log.add_durable(_shape(i, durable=True, path=path), f"{i:x}")


def _write(path: Path, n: int, max_bytes: int = 64 << 20, start: int = 0) -> None:
    """Records ``start`` .. ``start+n-1`` through the daemon's side and a real writer process."""

    async def main() -> None:
        log = AuditLog(path, max_bytes=max_bytes)
        await log.open()
        for i in range(start, start + n):
            if i % 7 == 0:
                await _add_durable(log, i)
            else:
                _add(log, i)
        await log.close()

    asyncio.run(main())


def _numbers(path: Path) -> list[int]:
    return [int(r["target"]) for r in read_records(path)]


def test_chain_starts_at_genesis_and_links_each_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 20)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 20
    assert json.loads(lines[0])["prev"] == GENESIS
    for before, line in itertools.pairwise(lines):
        assert json.loads(line)["prev"] == line_hash(before)
    assert verify(path).ok


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 5)
    _write(path, 5, start=5)
    result = verify(path)
    assert result.ok and result.lines == 10


def test_a_batch_of_several_chunks_keeps_its_order_and_its_start_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    reads = 2 * CHUNK + 45  # the writer chains and writes a frame CHUNK records at a time

    async def main() -> None:
        log = AuditLog(path)
        await log.open()
        for i in range(reads):
            _add(log, i)
        await _add_durable(log, reads)  # one frame with the reads before it
        assert _numbers(path) == list(range(reads + 1))  # acknowledged: it and all before it are written
        await log.close()

    asyncio.run(main())
    assert verify(path).ok


def test_torn_last_line_is_cut_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 3)
    with open(path, "ab") as fh:
        fh.write(b'{"n":99,"pr')
    _write(path, 2, start=3)
    assert verify(path).ok and verify(path).lines == 5


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 200, max_bytes=2000)
    files = log_files(path)
    assert len(files) > 3 and files[-1] == path and files[0].name == "audit.log.000001"
    assert verify(path).ok and verify(path).lines == 200
    assert _numbers(path) == list(range(200))


def _tamper(path: Path, how: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "edit":
        lines[4] = lines[4].replace(b"xxxx", b"xxxy", 1)
    elif how == "delete":
        del lines[4]
    elif how == "reorder":
        lines[4], lines[5] = lines[5], lines[4]
    elif how == "delete-first":
        del lines[0]
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("how", ["edit", "delete", "reorder", "delete-first"])
def test_verify_names_the_first_bad_line(tmp_path: Path, how: str) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    _tamper(path, how)
    result = verify(path)
    assert not result.ok
    expected = {"edit": 6, "delete": 5, "reorder": 5, "delete-first": 1}[how]
    assert result.problem.startswith(f"{path}:{expected}: chain broken")


def test_verify_detects_a_deleted_rotated_file_and_edits_in_old_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 100, max_bytes=2000)
    files = log_files(path)
    _tamper(files[1], "edit")
    assert not verify(path).ok and f"{files[1]}:6" in verify(path).problem
    _write(tmp_path / "b.log", 100, max_bytes=2000)
    middle = log_files(tmp_path / "b.log")[2]
    middle.unlink()
    assert not verify(tmp_path / "b.log").ok


def test_cli_verify_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    cli = [sys.executable, "-m", "dockyard.cli.main"]
    ok = subprocess.run([*cli, "audit", "verify", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "intact: 10 records" in ok.stdout
    _tamper(path, "reorder")
    bad = subprocess.run([*cli, "audit", "verify", str(path)], capture_output=True, text=True)
    assert bad.returncode == 1 and f"{path}:5" in bad.stderr
    tail = subprocess.run([*cli, "audit", "tail", "-n", "3", str(path)], capture_output=True, text=True)
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 3


def test_write_failure_is_reported_and_recovers(tmp_path: Path) -> None:
    chain = ChainFile(tmp_path / "audit.log")
    chain.open()
    chain.append('{"n":0')
    assert chain.flush() is None
    good_fd = chain._fd
    chain._fd = 10_000  # a closed descriptor: every write fails with EBADF
    chain.append('{"n":1')
    assert isinstance(chain.flush(), OSError) and chain.failure is not None and chain.pending
    chain._fd = good_fd
    chain.append('{"n":2')
    assert chain.flush() is None and chain.failure is None  # the retained line 1 went out first
    chain.close()
    assert [r["n"] for r in read_records(tmp_path / "audit.log")] == [0, 1, 2]
    assert verify(tmp_path / "audit.log").ok


def test_backlog_beyond_the_limit_drops_reads_and_says_so(tmp_path: Path) -> None:
    chain = ChainFile(tmp_path / "audit.log", max_pending=100)
    chain.open()
    good_fd, chain._fd = chain._fd, 10_000
    for i in range(5):
        chain.append(f'{{"n":{i},"pad":"{"x" * 60}"')
        chain.flush()
    chain.append('{"n":5', durable=True)  # a record the daemon waits for is never dropped
    chain._fd = good_fd
    assert chain.flush() is None
    chain.close()
    records = list(read_records(tmp_path / "audit.log"))
    assert [r["n"] for r in records] == [0, 5]
    assert records[-1]["dropped_before"] == 4 and verify(tmp_path / "audit.log").ok


@pytest.mark.parametrize(
    "path", ['/x"y', "/a\\b", "/p%20%s%d", "/\u00e9t\u00e9", '/"},"status":1,{"', "/\x01\x7f", "/%(x)s"]
)
def test_client_text_cannot_break_out_of_its_field(tmp_path: Path, path: str) -> None:
    """The path is the client's: quotes, escapes, ``%`` and control characters stay inside its string."""
    _write(tmp_path / "a.log", 0)
    log = tmp_path / "audit.log"

    async def main() -> None:
        audit = AuditLog(log)
        await audit.open()
        await _add_durable(audit, 1, path=path)
        _add(audit, 2, path=path)
        await audit.close()

    asyncio.run(main())
    records = list(read_records(log))
    assert [r["path"] for r in records] == [path, path]
    assert records[1]["status"] == 200 and "status" not in records[0] and verify(log).ok


def test_a_writer_that_dies_is_reported_and_restarted(tmp_path: Path) -> None:
    """Mutating calls are refused while no writer runs; a new one continues the chain."""
    log = tmp_path / "audit.log"

    async def main() -> None:
        audit = AuditLog(log)
        await audit.open()
        await _add_durable(audit, 0)
        proc = audit._proc
        assert proc is not None
        proc.kill()
        for _ in range(100):
            if audit.failure is not None:
                break
            await asyncio.sleep(0.02)
        assert audit.failure == "audit writer is not running"
        with pytest.raises(OSError):
            await _add_durable(audit, 1)
        for i in range(3):  # reads while no writer runs: dropped, and counted in the next line written
            _add(audit, 10 + i)
        audit._hand_over()
        for _ in range(250):
            if audit.failure is None:
                break
            await asyncio.sleep(0.02)
        assert audit.failure is None and audit._proc is not None and audit._proc.pid != proc.pid
        await _add_durable(audit, 2)
        await audit.close()

    asyncio.run(main())
    assert verify(log).ok
    records = list(read_records(log))
    assert [int(r["target"]) for r in records] == [0, 2] and records[1]["dropped_before"] == 3


def test_a_writer_that_cannot_open_the_log_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()

    async def main() -> None:
        with pytest.raises(OSError, match="did not start"):
            await AuditLog(tmp_path / "dir").open()  # a directory, not a file

    asyncio.run(main())


def test_rate_limiter_token_bucket_and_streams() -> None:
    now = [0.0]
    rl = RateLimiter(lambda: now[0])
    limits = Limits(requests_per_second=2, burst=3, concurrent_streams=1)
    for _ in range(3):
        rl.take("uid:1", limits)
    with pytest.raises(TooManyRequests, match="at most 2 requests per second"):
        rl.take("uid:1", limits)
    rl.take("uid:2", limits)  # per identity
    now[0] += 0.5
    rl.take("uid:1", limits)
    assert rl.open_stream("uid:1", limits)
    with pytest.raises(TooManyRequests, match="concurrent streams"):
        rl.open_stream("uid:1", limits)
    rl.close_stream("uid:1")
    assert rl.open_stream("uid:1", limits)
    assert not rl.open_stream("uid:1", Limits())


def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    """Two writers on one log (a restarted daemon's, while the old one finishes) must not fork the chain."""
    first = ChainFile(tmp_path / "audit.log")
    first.open()
    first.append('{"n":0')
    first.flush()
    opened = threading.Event()
    second = ChainFile(tmp_path / "audit.log")
    waiter = threading.Thread(target=lambda: (second.open(), opened.set()))
    waiter.start()
    assert not opened.wait(0.3)  # blocked on the lock
    first.append('{"n":1')
    first.close()
    assert opened.wait(5)
    second.append('{"n":2')
    second.close()
    waiter.join()
    assert [r["n"] for r in read_records(tmp_path / "audit.log")] == [0, 1, 2]
    assert verify(tmp_path / "audit.log").ok


# ---- the writer renders packed records straight to lines: the same bytes as unpack + texts + extend ----

HOSTILE_PATHS = ['/x"y', "/a\\b", "/p%20%s%d", "/\u00e9t\u00e9\U0001f600", '/"},"status":1,{"', "/\x01\x7f"]


def _frames(count: int, per_frame: int, dropped: int = 0) -> list[bytes]:
    """Frames as the daemon sends them: reads and ``start`` records (every 10th) of many shapes."""
    shapes = [_shape(i, durable=i % 5 == 0, path=HOSTILE_PATHS[i % len(HOSTILE_PATHS)]) for i in range(30)]
    out, n = [], 0
    for batch in range(1, count + 1):
        buf, now = RecordBuffer(), time.monotonic()
        for _ in range(per_frame):
            if n % 10 == 0:
                buf.add(shapes[n % 30 // 5 * 5], f"{n:x}", None, None, None, now + n * 1e-5)
            else:
                buf.add(shapes[n % 30 // 5 * 5 + 1 + n % 4], f"{n:x}", 200, n, now, now + n * 1e-5)
            n += 1
        out.append(frame((batch, time.time(), now, dropped, buf.starts > 0, *buf.take())))
    return out


def _old_take(writer: Writer, data: bytes) -> None:
    """Writer._take as it was before render: unpack, texts and ChainFile.extend per CHUNK records."""
    for _, wall, mono, dropped, has_start, shapes, packed in take_frames(bytearray(data)):
        writer.chain.dropped += dropped
        writer._take_slow(shapes, packed, wall, mono, has_start)


def _run(path: Path, take: Callable[[Writer, bytes], object], frames: list[bytes], failing: range = range(0),
         max_bytes: int = 64 << 20, max_pending: int = 16 << 20) -> bytes:  # fmt: skip
    """The frames through a writer's ``take``; writes fail during the frames numbered in ``failing``."""
    chain = ChainFile(path, max_bytes, max_pending)
    chain.open()
    writer, good = Writer(chain, -1, -1), chain._fd
    for i, data in enumerate(frames):
        chain._fd = 10_000 if i in failing else good  # a closed descriptor: every write fails
        take(writer, data)
        chain.flush()
    chain._fd = good
    chain.close()
    return b"".join(p.read_bytes() for p in log_files(path))


def test_the_writer_renders_the_bytes_the_old_path_wrote(tmp_path: Path) -> None:
    frames = _frames(4, 2 * CHUNK + 77, dropped=3)  # chunks of CHUNK records and a partial one
    new = _run(tmp_path / "new.log", Writer._take, frames)
    assert new == _run(tmp_path / "old.log", _old_take, frames)
    records = list(read_records(tmp_path / "new.log"))
    assert len(records) == 4 * (2 * CHUNK + 77) and [int(r["request_id"], 16) for r in records] == list(
        range(len(records))
    )
    assert [r.get("dropped_before") for r in records if "dropped_before" in r] == [3, 3, 3, 3]
    assert {r["path"] for r in records} == set(HOSTILE_PATHS)
    assert sum(r["phase"] == "start" for r in records) == len(records) // 10 + 1
    cli = [sys.executable, "-m", "dockyard.cli.main", "audit", "verify", str(tmp_path / "new.log")]
    ok = subprocess.run(cli, capture_output=True, text=True)
    assert ok.returncode == 0 and f"intact: {len(records)} records" in ok.stdout


def test_rotation_between_rendered_chunks_keeps_whole_lines_and_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    frames = _frames(3, 3 * CHUNK)
    assert _run(path, Writer._take, frames, max_bytes=100_000) == _run(
        tmp_path / "old.log", _old_take, frames, max_bytes=100_000
    )
    files = log_files(path)  # a chunk is ~47 kB: a file holds two or three
    assert len(files) >= 3 and all(p.read_bytes().endswith(b"\n") for p in files)
    assert verify(path).ok and verify(path).lines == 9 * CHUNK
    assert [int(r["request_id"], 16) for r in read_records(path)] == list(range(9 * CHUNK))


def test_a_failing_log_with_a_backlog_still_drops_reads_through_the_writer(tmp_path: Path) -> None:
    """Frames 1-2 fail: the first chunk of frame 1 is rendered, then the backlog is over max_pending and
    the rest go the way that drops reads and keeps start records; frame 3 is written, saying how many."""
    frames = _frames(4, 2 * CHUNK + 5, dropped=2)
    path = tmp_path / "audit.log"
    new = _run(path, Writer._take, frames, failing=range(1, 3), max_pending=CHUNK * 100)
    assert new == _run(tmp_path / "old.log", _old_take, frames, failing=range(1, 3), max_pending=CHUNK * 100)
    records = list(read_records(path))
    ids = [int(r["request_id"], 16) for r in records]
    per = 2 * CHUNK + 5
    lost = [i for i in range(4 * per) if i not in set(ids)]
    assert ids == sorted(ids) and lost and all(i % 10 for i in lost)  # reads only, never a start record
    assert ids[: per + CHUNK] == list(range(per + CHUNK))  # frame 0 and frame 1's first chunk: written
    assert sum(r.get("dropped_before", 0) for r in records) == len(lost) + 4 * 2
    assert verify(path).ok


def test_the_formatter_keeps_short_templates_only() -> None:
    """A path is client text of up to 64 KiB: the writer keeps the fixed text of short shapes only, and a
    long one still formats the same each time."""
    from dockyard.security.audit_writer import Formatter

    caller = '{"transport":"unix","uid":0}'
    short: Shape = ("done", caller, "GET", "/_ping", "SystemPing", None, ("allow", "admins", ""))
    long: Shape = ("done", caller, "GET", "/containers/" + "x" * 60000 + "/json", "ContainerInspect",
                   "x" * 60000, ("allow", "admins", ""))  # fmt: skip
    fmt = Formatter()
    first = fmt.templates([short, long])
    again = fmt.templates([short, long])
    assert first == again and first[1][0].count("x" * 60000) == 2 and first[1][1] is True
    assert list(fmt._fixed) == [short]
