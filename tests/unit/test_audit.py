"""The audit log: hash chain, rotation, verification of tampering, failure reporting, rate limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.api.middleware.ratelimit import RateLimiter
from dockyard.errors import TooManyRequests
from dockyard.security.audit import GENESIS, AuditLog, line_hash, log_files, read_records, verify
from dockyard.security.policy import Limits


def _write(path: Path, n: int, max_bytes: int = 64 << 20, start: int = 0) -> None:
    async def main() -> None:
        log = AuditLog(path, max_bytes=max_bytes)
        log.open(asyncio.get_running_loop())
        for i in range(start, start + n):
            fut = log.record({"n": i, "pad": "x" * 50}, durable=i % 7 == 0)
            if fut is not None:
                await fut
        await asyncio.to_thread(log.close)

    asyncio.run(main())


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
    assert [r["n"] for r in read_records(path)] == list(range(200))


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
    async def main() -> None:
        log = AuditLog(tmp_path / "audit.log")
        log.open(asyncio.get_running_loop())
        fut = log.record({"n": 0}, durable=True)
        assert fut is not None
        await fut
        good_fd = log._fd
        log._fd = 10_000  # a closed descriptor: every write fails with EBADF
        fut = log.record({"n": 1}, durable=True)
        assert fut is not None
        with pytest.raises(OSError):
            await fut
        assert log.failure is not None
        log._fd = good_fd
        fut = log.record({"n": 2}, durable=True)
        assert fut is not None
        await fut  # the retained line 1 is written first, then line 2
        assert log.failure is None
        await asyncio.to_thread(log.close)

    asyncio.run(main())
    assert [r["n"] for r in read_records(tmp_path / "audit.log")] == [0, 1, 2]
    assert verify(tmp_path / "audit.log").ok


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
