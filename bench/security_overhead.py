"""What identity + policy + audit cost per request: two private dockyardd side by side, one with
``--audit-log off`` and no policy, one with the example policy and the audit log, loaded interleaved with
``GET /_ping`` and ``GET /containers/json`` (16 keep-alive connections). Prints a markdown table.
Several daemons per variant (``--pairs``): on this VM two identical daemons differ by up to 20%, more than
the effect measured, so one pair cannot tell 10% apart.

The load comes from bench/uload.c by default: the Python generator costs ~30 µs of CPU per request, which on a
two-core machine makes the benchmark measure the generator's contention with the daemon (and with the audit
writer process) more than the daemon. "daemon CPU" counts the daemon and its children (the audit writer).

Usage: ``bench/security_overhead.py [--rounds N] [--seconds S] [--pairs P] [--engine c|python]``.
Reports, never
asserts (goal: within 10%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemons import OwnDaemon, Target

LOADGEN = Path(__file__).with_name("loadgen.py")
POLICY = Path(__file__).resolve().parents[1] / "examples" / "policies" / "team.toml"


def load(t: Target, path: str, seconds: float, engine: str) -> dict[str, float]:
    """One closed-loop load run against ``t``."""
    cmd = [sys.executable, str(LOADGEN), "--sock", t.sock, "--path", path, "--conns", "16",
           "--seconds", str(seconds), "--warmup", "0.5", "--pids", str(t.pid),
           "--engine", engine]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, timeout=seconds + 60, check=True, stdin=subprocess.DEVNULL
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--pairs", type=int, default=3,
                    help="daemons per variant (identical daemons differ by up to 20%% here)")  # fmt: skip
    ap.add_argument("--engine", choices=("c", "python"), default="c",
                    help="load generator: c (default; light on a small machine) or python")  # fmt: skip
    args = ap.parse_args(argv)
    variants = {"off": ["--audit-log", "off"], "policy+audit": ["--policy", str(POLICY)]}
    daemons = [OwnDaemon(flags, name=name) for _ in range(args.pairs) for name, flags in variants.items()]
    try:
        targets = [d.start() for d in daemons]
        rows = []
        for path in ("/_ping", "/containers/json?all=1"):
            rps: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for t in targets:  # interleaved: machine noise hits both alike
                    r = load(t, path, args.seconds, args.engine)
                    rps[t.name].append(r["rps"])
                    cpu[t.name].append(r["daemon_cpu_us_per_req"])
            off, on = (statistics.median(rps[name]) for name in variants)
            cpu_off, cpu_on = (statistics.median(cpu[name]) for name in variants)
            n = len(rps["off"])
            rows.append(f"| `GET {path}` req/s (median of {n}) | {off:,.0f} | {on:,.0f} | {on / off:.2f}x |")
            rows.append(f"| `GET {path}` daemon + writer CPU per request | {cpu_off:.1f} µs | "
                        f"{cpu_on:.1f} µs | {cpu_on / cpu_off:.2f}x |")  # fmt: skip
        print("| measure | off | policy + audit | on/off |\n| --- | ---: | ---: | ---: |")
        print("\n".join(rows))
    finally:
        for d in daemons:
            d.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
