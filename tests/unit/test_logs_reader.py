"""Reading k8s-file logs: record parsing, joining, filters, tail from the end, garbage, speed."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from dockyard.logs import reader
from dockyard.logs.reader import read_logs, read_logs_async
from dockyard.logs.records import LogRecord, rfc3339_to_ns

BASE = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z


def ts(offset_ns: int, zone: str = "+00:00") -> str:
    """Format BASE + offset the way conmon does, in the given zone (only +00:00 and +01:00 used)."""
    t = BASE + offset_ns + (3600 * 10**9 if zone == "+01:00" else 0)
    secs, nanos = divmod(t, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}{zone}"


def line(offset_ns: int, stream: str, flag: str, content: str, zone: str = "+00:00") -> bytes:
    return f"{ts(offset_ns, zone)} {stream} {flag} {content}\n".encode()


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def reference(
    data: bytes, stdout: bool, stderr: bool, since: int | None, until: int | None
) -> list[LogRecord]:
    """A deliberately naive whole-file reader to compare the fast one against."""
    pending: dict[int, tuple[bytes, str]] = {}
    out: list[tuple[int, bytes, str]] = []
    complete, _, _ = data.rpartition(b"\n")
    for raw in complete.split(b"\n") if complete else []:
        parts = raw.split(b" ", 3)
        if len(parts) != 4 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
            continue
        stream = 1 if parts[1] == b"stdout" else 2
        prev = pending.pop(stream, (b"", ""))[0]
        if parts[2] == b"P":
            pending[stream] = (prev + parts[3], parts[0].decode())
        else:
            out.append((stream, prev + parts[3] + b"\n", parts[0].decode()))
    out.extend((s, body, stamp) for s, (body, stamp) in sorted(pending.items()))
    result = []
    for stream, body, stamp in out:
        t = rfc3339_to_ns(stamp.encode())
        keep = stdout if stream == 1 else stderr
        if keep and (since is None or t >= since) and (until is None or t <= until):
            result.append(LogRecord(stream, body, stamp, t))
    return result


def test_full_lines_of_both_streams(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(0, "stdout", "F", "hello"), line(5, "stderr", "F", "oops"))
    records = read_logs(path)
    assert records == [
        LogRecord(1, b"hello\n", ts(0), BASE),
        LogRecord(2, b"oops\n", ts(5), BASE + 5),
    ]


def test_local_offset_is_converted_to_unix_time(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(7, "stdout", "F", "x", zone="+01:00"))
    [record] = read_logs(path)
    assert record.time_ns == BASE + 7
    assert record.timestamp.endswith("+01:00")


def test_empty_line_and_spaces_in_content(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(0, "stdout", "F", ""), line(1, "stdout", "F", "a  b stdout F c "))
    assert [r.data for r in read_logs(path)] == [b"\n", b"a  b stdout F c \n"]


def test_partial_records_join_per_stream(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.log",
        line(0, "stdout", "P", "abc"),
        line(1, "stderr", "F", "between"),
        line(2, "stdout", "P", "def"),
        line(3, "stdout", "F", "ghi"),
    )
    records = read_logs(path)
    assert [(r.stream, r.data) for r in records] == [(2, b"between\n"), (1, b"abcdefghi\n")]
    assert records[1].timestamp == ts(3)


def test_unfinished_last_line_is_returned_without_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(0, "stdout", "F", "a"), line(1, "stdout", "P", "prompt> "))
    assert [r.data for r in read_logs(path)] == [b"a\n", b"prompt> "]
    assert [r.data for r in read_logs(path, tail=1)] == [b"prompt> "]


def test_record_still_being_written_is_not_read(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(0, "stdout", "F", "a"), line(1, "stdout", "F", "half")[:-3])
    assert [r.data for r in read_logs(path)] == [b"a\n"]
    assert [r.data for r in read_logs(path, tail=5)] == [b"a\n"]


def test_stream_filters(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(0, "stdout", "F", "o"), line(1, "stderr", "F", "e"))
    assert [r.data for r in read_logs(path, stderr=False)] == [b"o\n"]
    assert [r.data for r in read_logs(path, stdout=False)] == [b"e\n"]
    assert read_logs(path, stdout=False, stderr=False) == []


def test_tail_counts_lines_after_stream_filter(tmp_path: Path) -> None:
    lines = [line(i, "stdout", "F", f"o{i}") for i in range(50)]
    lines.insert(10, line(10, "stderr", "F", "e1"))
    path = write(tmp_path / "c.log", *lines)
    assert [r.data for r in read_logs(path, tail=3)] == [b"o47\n", b"o48\n", b"o49\n"]
    assert [r.data for r in read_logs(path, tail=2, stdout=False)] == [b"e1\n"]
    assert read_logs(path, tail=0) == []
    assert len(read_logs(path, tail=1000)) == 51


def test_since_and_until_are_inclusive(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", *(line(i * 10, "stdout", "F", str(i)) for i in range(10)))
    got = read_logs(path, since_ns=BASE + 30, until_ns=BASE + 60)
    assert [r.data for r in got] == [b"3\n", b"4\n", b"5\n", b"6\n"]
    assert [r.data for r in read_logs(path, since_ns=BASE + 85)] == [b"9\n"]
    assert [r.data for r in read_logs(path, until_ns=BASE + 10, tail=1)] == [b"1\n"]
    assert read_logs(path, since_ns=BASE + 35, tail=100)[0].data == b"4\n"


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.log",
        b"\x00\xff garbage\n",
        b"\n",
        b"not-a-time stdout F nope\n",
        line(0, "stdout", "F", "good"),
        f"{ts(1)} stdin F nope\n".encode(),
        f"{ts(2)} stdout X nope\n".encode(),
        b"2024-13-45T99:99:99.0+00:00 stdout F bad date\n",
        f"{ts(3)} stdout\n".encode(),
        line(4, "stderr", "F", "also good"),
    )
    assert [r.data for r in read_logs(path)] == [b"good\n", b"also good\n"]
    assert [r.data for r in read_logs(path, tail=1)] == [b"also good\n"]


def test_missing_file_reads_empty(tmp_path: Path) -> None:
    assert read_logs(tmp_path / "absent.log", tail=3) == []


def test_async_wrapper(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", line(0, "stdout", "F", "a"), line(1, "stdout", "F", "b"))
    assert [r.data for r in asyncio.run(read_logs_async(path, tail=1))] == [b"b\n"]


def _random_log(rng: random.Random, n: int) -> bytes:
    out = []
    t = 0
    for _ in range(n):
        t += rng.choice((0, 0, 1, 5))
        stream = rng.choice(("stdout", "stdout", "stdout", "stderr"))
        flag = rng.choice(("F", "F", "F", "P"))
        content = rng.choice(("", "x", "stderr F y", " stdout P z", "w" * rng.randint(1, 40)))
        if flag == "P" and not content:
            content = "p"
        kind = rng.random()
        if kind < 0.03:
            out.append(b"garbage line\n")
        out.append(line(t, stream, flag, content))
    return b"".join(out)


@pytest.mark.parametrize("block", [5, 64, 4096])
def test_tail_and_window_match_a_full_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(reader, "BACK_BLOCK", block)
    rng = random.Random(block)
    for case in range(60):
        data = _random_log(rng, rng.randint(0, 120))
        path = tmp_path / f"{case}.log"
        path.write_bytes(data)
        stdout, stderr = rng.choice(((True, True), (True, False), (False, True)))
        since = BASE + rng.randint(0, 100) if rng.random() < 0.4 else None
        until = BASE + rng.randint(0, 300) if rng.random() < 0.3 else None
        tail = rng.choice((None, 0, 1, 3, 10, 500))
        want = reference(data, stdout, stderr, since, until)
        if tail is not None:
            want = want[-tail:] if tail else []
        got = read_logs(path, stdout=stdout, stderr=stderr, since_ns=since, until_ns=until, tail=tail)
        assert got == want, (case, stdout, stderr, since, until, tail)


def test_line_split_far_back_behind_the_other_stream(tmp_path: Path) -> None:
    filler = line(2, "stdout", "F", "filler") * 20000
    path = write(
        tmp_path / "c.log",
        line(0, "stderr", "F", "old"),
        line(1, "stderr", "P", "start-"),
        filler,
        line(3, "stderr", "F", "end"),
    )
    assert [r.data for r in read_logs(path, tail=1)] == [b"start-end\n"]
    assert [r.data for r in read_logs(path, tail=1, stdout=False)] == [b"start-end\n"]
    assert [r.data for r in read_logs(path, tail=2, stdout=False)] == [b"old\n", b"start-end\n"]


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 100 MB of stdout lines, then one stderr line."""
    path = tmp_path_factory.mktemp("big") / "big.log"
    block = b"".join(line(i, "stdout", "F", f"line {i:06d} " + "x" * 40) for i in range(100_000))
    with path.open("wb") as f:
        for _ in range(100 * 2**20 // len(block) + 1):
            f.write(block)
        f.write(line(200_000, "stderr", "F", "last words"))
    return path


@pytest.mark.slow
def test_tail_of_100_mb_is_fast(big_log: Path) -> None:
    assert big_log.stat().st_size > 100 * 2**20
    started = time.perf_counter()
    records = read_logs(big_log, tail=10)
    elapsed = time.perf_counter() - started
    assert len(records) == 10
    assert records[-1].data == b"last words\n"
    assert records[0].data.startswith(b"line 099991 ")
    assert elapsed < 0.1, elapsed


@pytest.mark.slow
def test_tail_of_a_rare_stream_in_100_mb_reads_from_the_end(big_log: Path) -> None:
    started = time.perf_counter()
    records = read_logs(big_log, tail=10, stdout=False)
    elapsed = time.perf_counter() - started
    assert [r.data for r in records] == [b"last words\n"]
    assert elapsed < 5, elapsed  # a full scan, but of headers only
