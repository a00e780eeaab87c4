"""What identity + policy + audit cost the serving process per request, in CPU instructions (callgrind).

``bench/security_overhead.py`` measures throughput, which on a shared VM swings by 2x from one second to the
next; instruction counts do not. This runs a private dockyardd under ``valgrind --tool=callgrind`` (serving
process only: the audit writer, a child, is not traced), sends warm-up requests, then counts the
instructions of ``--requests`` more ``GET`` requests over 16 keep-alive connections, for a daemon with
``--audit-log off`` and no policy and for one with the example policy and the audit log. Instructions are
not time (a cache miss costs more than an add), but for the same code path they are a stable yardstick.
What still moves them is the string hash seed (it decides dictionary collisions: up to 1% of a daemon's
count), so each count is taken under several seeds and the median reported.

Under valgrind the daemon serves ~50x slower, so a 50 ms audit batch would hold a handful of records and
charge each request a share of the hand-over (taking the packed records, pipe write, timer) that it never
has at full speed, where a batch holds ~2,000. The daemon is therefore started with the batch delay raised
to 5 s (a benchmark-only patch of ``audit_pipe.BATCH_DELAY`` in the launcher below), which keeps batches at
full-speed sizes.

Usage: ``bench/security_instructions.py [--requests N] [--seeds N]`` (needs ``valgrind``: ``apt-get install
valgrind``). Reports, never asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from uhttp import UnixHTTP, ping

POLICY = Path(__file__).resolve().parents[1] / "examples" / "policies" / "team.toml"
VARIANTS = {"off": ["--audit-log", "off"], "policy+audit": ["--policy", str(POLICY)]}
PATHS = ("/_ping", "/containers/json?all=1")
LAUNCHER = """
import runpy, sys
import dockyard.security.audit_pipe as pipe
pipe.BATCH_DELAY = 5.0  # full-speed batch sizes under valgrind (see bench/security_instructions.py)
sys.argv = ["dockyardd", *sys.argv[1:]]
runpy.run_module("dockyard.daemon", run_name="__main__")
"""


def _requests(sock: str, path: str, n: int, conns: int = 16) -> None:
    """``n`` sequential keep-alive GETs, round-robin over ``conns`` connections."""
    pool = [UnixHTTP(sock, timeout=120) for _ in range(conns)]
    try:
        for i in range(n):
            pool[i % conns].request("GET", path, expect=(200,))
    finally:
        for client in pool:
            client.close()


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def measure(flags: list[str], path: str, n: int, hash_seed: int) -> float:
    """Instructions per request of ``path``, for a fresh daemon started with ``flags`` and
    ``PYTHONHASHSEED=hash_seed`` (one daemon per count: a second dump after toggling instrumentation gave
    garbage totals)."""
    base = Path(tempfile.mkdtemp(prefix="dyi-", dir="/tmp"))
    sock = str(base / "d.sock")
    seed = [sys.executable, "-m", "dockyard.store.seed", "--data-root", str(base / "root")]
    subprocess.run(seed, check=True, capture_output=True)
    out = base / "cg.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, "-c", LAUNCHER, "-H", f"unix://{sock}", "--data-root", str(base / "root"),
           "--exec-root", str(base / "exec"), "--log-level", "warn", *flags]  # fmt: skip
    with open(base / "daemon.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONHASHSEED": str(hash_seed)})  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not ping(sock, timeout=10):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start: {(base / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.5)
        _requests(sock, path, 400)  # warm-up: plans, caches, first-call costs
        _control(proc.pid, "-i", "on")
        _requests(sock, path, n)
        _control(proc.pid, "-d")
        m = re.search(r"^(?:summary|totals): (\d+)", Path(f"{out}.1").read_text(), re.M)
        if m is None:
            raise RuntimeError(f"no instruction count in {out}.1")
        return int(m.group(1)) / n
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for mnt in ("exec/ns/mnt", "exec/ns"):  # the daemon's private mount namespace holders
            subprocess.run(["umount", str(base / mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Measure both daemons (one after the other: counts do not drift) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3, help="string hash seeds to measure each daemon with")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    # Each count under several string hash seeds: the seed decides dictionary collisions, which moved a
    # daemon's count by up to 1% (as much as a change worth measuring) between otherwise identical runs.
    seeds = range(args.seeds)
    counts = {
        (name, path): sorted(measure(flags, path, args.requests, seed) for seed in seeds)
        for name, flags in VARIANTS.items()
        for path in PATHS
    }
    print(f"serving process instructions per request (callgrind, {args.requests} requests, 16 connections; "
          f"median over {args.seeds} hash seeds, range in brackets)\n")  # fmt: skip
    print("| request | off | policy + audit | on/off |\n| --- | ---: | ---: | ---: |")
    for path in PATHS:
        off, on = counts[("off", path)], counts[("policy+audit", path)]
        moff, mon = statistics.median(off), statistics.median(on)
        print(f"| `GET {path}` | {moff:,.0f} ({off[0]:,.0f}-{off[-1]:,.0f}) | "
              f"{mon:,.0f} ({on[0]:,.0f}-{on[-1]:,.0f}) | {mon / moff:.3f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
