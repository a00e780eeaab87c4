"""Closed-loop HTTP load over AF_UNIX: N keep-alive connections, each sends its next request as soon as the
previous response is complete. Runs as its own process (``python bench/loadgen.py ...``) so its CPU time is
not charged to, nor competes in the same interpreter with, the benchmark's bookkeeping; prints one JSON
object on stdout.

Responses are parsed with httptools (already a dockyard dependency; a C parser, so the generator is not the
bottleneck it would be with a hand-written Python parser).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httptools  # type: ignore[import-untyped,unused-ignore]
from procinfo import CLK_TCK, descendants, process_table, tree_cpu_ticks


class _State:
    def __init__(self, path: str, max_requests: int) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockyard-bench\r\n\r\n".encode()
        self.max_requests = max_requests
        self.measuring = False
        self.stopping = False
        self.issued = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.t_start = 0.0
        self.t_last = 0.0
        self.open = 0
        self.all_closed = asyncio.get_running_loop().create_future()

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def closed(self) -> None:
        self.open -= 1
        if self.open <= 0 and not self.all_closed.done():
            self.all_closed.set_result(None)


class _Conn(asyncio.Protocol):
    def __init__(self, st: _State) -> None:
        self.st = st
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.t0 = 0.0
        self.measured = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.st.open += 1
        self._send()

    def _send(self) -> None:
        st = self.st
        assert self.transport is not None
        if st.stopping or (st.measuring and st.issued >= st.max_requests):
            st.stopping = True
            self.transport.close()
            return
        self.measured = st.measuring
        if self.measured:
            st.issued += 1
        self.t0 = time.perf_counter()
        self.transport.write(st.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.st.error(f"parse: {exc}")
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        t = time.perf_counter()
        st = self.st
        status = self.parser.get_status_code()
        if self.measured:
            if status == 200:
                st.latencies.append(t - self.t0)
            else:
                st.error(f"HTTP {status}")
            st.t_last = t
        if not self.parser.should_keep_alive():
            st.error("server closed the keep-alive connection")
            assert self.transport is not None
            self.transport.close()
            return
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.st.error(f"connection lost: {exc!r}")
        self.st.closed()


async def run_load(
    sock: str, path: str, conns: int, seconds: float, warmup: float, max_requests: int, pids: set[int]
) -> dict[str, object]:
    """Run the load and return its figures (see :func:`main`)."""
    loop = asyncio.get_running_loop()
    st = _State(path, max_requests)
    for _ in range(conns):
        await loop.create_unix_connection(lambda: _Conn(st), sock)
    await asyncio.sleep(warmup)
    pids = with_children(pids)
    cpu0 = tree_cpu_ticks(pids)
    st.t_start = time.perf_counter()
    st.measuring = True
    deadline = st.t_start + seconds
    while not st.stopping and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    st.stopping = True
    cpu1 = tree_cpu_ticks(pids)
    t_end = time.perf_counter()
    try:
        await asyncio.wait_for(st.all_closed, 30)
    except TimeoutError:
        st.error("connections did not close within 30 s")
    n = len(st.latencies)
    duration = (st.t_last or t_end) - st.t_start
    lat = sorted(st.latencies)
    return {
        "conns": conns,
        "requests": n,
        "errors": st.errors,
        "error_samples": st.error_samples,
        "duration_s": duration,
        "rps": n / duration if duration > 0 else 0.0,
        "p50_ms": statistics.median(lat) * 1e3 if lat else None,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if lat else None,
        "daemon_cpu_us_per_req": 1e6 * (cpu1 - cpu0) / CLK_TCK / n if n and pids else None,
        "daemon_cpu_pct": 100.0 * (cpu1 - cpu0) / CLK_TCK / (t_end - st.t_start) if pids else None,
    }


def with_children(pids: set[int]) -> set[int]:
    """The processes and all their descendants: a daemon's children count (dockyard's audit writer is one)."""
    table = process_table()
    return {p for root in pids for p in descendants(root, table)}


UCLOAD_SRC = Path(__file__).with_name("uload.c")
UCLOAD_BIN = Path(__file__).with_name(".build") / "uload"


def c_loadgen() -> Path:
    """The C load generator, compiled when missing or older than its source."""
    if not UCLOAD_BIN.exists() or UCLOAD_BIN.stat().st_mtime < UCLOAD_SRC.stat().st_mtime:
        UCLOAD_BIN.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-o", str(UCLOAD_BIN), str(UCLOAD_SRC)], check=True)
    return UCLOAD_BIN


def run_c_load(
    sock: str, path: str, conns: int, seconds: float, warmup: float, pids: set[int]
) -> dict[str, object]:
    """As :func:`run_load`, with bench/uload.c generating the load; CPU is sampled at its START/END marks."""
    proc = subprocess.Popen([str(c_loadgen()), sock, path, str(conns), str(seconds), str(warmup)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    cpu0 = cpu1 = own0 = own1 = 0
    t0 = t1 = 0.0
    tree = pids
    result: dict[str, object] = {}
    for line in proc.stdout:
        if line.startswith("START"):
            tree = with_children(pids)
            cpu0, own0, t0 = tree_cpu_ticks(tree), tree_cpu_ticks(pids), time.perf_counter()
        elif line.startswith("END"):
            cpu1, own1, t1 = tree_cpu_ticks(tree), tree_cpu_ticks(pids), time.perf_counter()
        elif line.startswith("{"):
            result = json.loads(line)
    if proc.wait() != 0:
        raise RuntimeError(f"uload failed with status {proc.returncode}")
    n = int(result["requests"])  # type: ignore[call-overload]
    busy, own = (cpu1 - cpu0) / CLK_TCK, (own1 - own0) / CLK_TCK
    result.update(conns=conns, error_samples=[],
                  daemon_cpu_us_per_req=1e6 * busy / n if n and pids else None,
                  daemon_cpu_pct=100.0 * busy / (t1 - t0) if pids and t1 > t0 else None,
                  # the daemon process itself (all its threads), without its children (the audit writer)
                  serving_cpu_us_per_req=1e6 * own / n if n and pids else None)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the load, print the result as JSON.

    Args:
        argv: Command-line arguments (default: sys.argv[1:]).

    Returns:
        Exit status.
    """
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sock", required=True)
    ap.add_argument("--path", default="/_ping")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    ap.add_argument(
        "--pids",
        default="",
        help="comma-separated daemon pids whose CPU time (with their children's) to measure",
    )
    ap.add_argument("--engine", choices=("python", "c"), default="python",
                    help="c: bench/uload.c (built on first use): costs the machine far less CPU")  # fmt: skip
    ap.add_argument("--cpu", type=int, default=None,
                    help="run the generator (and uload) on this CPU only")  # fmt: skip
    a = ap.parse_args(argv)
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    pids = {int(p) for p in a.pids.split(",") if p}
    if a.engine == "c":
        json.dump(run_c_load(a.sock, a.path, a.conns, a.seconds, a.warmup, pids), sys.stdout)
        sys.stdout.write("\n")
        return 0
    coro = run_load(a.sock, a.path, a.conns, a.seconds, a.warmup, a.max_requests, pids)
    result = asyncio.run(coro)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
