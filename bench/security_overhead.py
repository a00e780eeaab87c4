"""What identity + policy + audit cost per request: private dockyardd side by side, one with ``--audit-log
off`` and no policy, one with the example policy and the audit log, plus a second "off" daemon whose ratio
to the first is the method's own noise. Loads: ``GET /_ping`` and ``GET /containers/json`` (16 keep-alive
connections from bench/uload.c). Prints two markdown tables.

How it measures, and why (each point was measured on the two-core VM this was written on):

* **At the same time** (first table; bench/same_time.py). The off daemon and the other one are loaded at
  once, each process tree in a cpu cgroup of its own with equal weight on CPU 0, the two load generators on
  CPU 1; the figure is the median of the runs' throughput ratios. Both daemons see the same machine speed at
  every instant, so the VM's swings (up to 2x from one second to the next) cancel: two identical off
  daemons come out within 2-3% run by run. What is left is per process (one daemon a percent or two faster
  than an identical one, run after run), so the policy daemon is paired with each off daemon in turn. Two
  placements of the audit writer: on CPU 1 (a machine with a core to spare for it, the throughput the
  daemon's clients see), and on CPU 0 in the daemon's own group (all of the security work paid from the
  daemon's share: its whole CPU cost).
* **In turn** (second table). The daemons alternated, each alone, for short runs (``--seconds``, 0.5 s);
  each variant's figure is its best run (the median is shown too). The serving thread is pinned to CPU 0,
  the load generator to CPU 1, the audit writer left to the scheduler. Closer to a real deployment, but
  on a busy host two identical daemons differed by up to 15% even so: read it beside its noise row.
* **CPU.** The serving process's CPU time per request (all its threads) and the audit writer's, apart.
* **Interference probe.** The off daemon is also loaded beside an idle-priority process that keeps CPU 1
  busy a quarter of the time (about what the audit writer takes at these rates) with a loop that touches no
  memory: what this machine charges the serving core for plain CPU work on the other one.

Usage: ``bench/security_overhead.py [--rounds N] [--seconds S] [--same-time-rounds N]
[--same-time-seconds S]``. Needs root for the cgroups (the first table is skipped, saying why, without).
Reports, never asserts (goal: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import same_time
from daemons import OwnDaemon, Target

LOADGEN = Path(__file__).with_name("loadgen.py")
POLICY = Path(__file__).resolve().parents[1] / "examples" / "policies" / "team.toml"
VARIANTS = {"off": ["--audit-log", "off"], "off, again": ["--audit-log", "off"],
            "policy+audit": ["--policy", str(POLICY)]}  # fmt: skip
PROBE = "off, beside CPU work"
PATHS = ("/_ping", "/containers/json?all=1")
BURNER = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
while True:  # busy 5 ms of every 20
    end = time.perf_counter() + 0.005
    while time.perf_counter() < end:
        pass
    time.sleep(0.015)
"""


def load(t: Target, path: str, seconds: float, cpu: int | None) -> dict[str, float]:
    """One closed-loop load run against ``t``."""
    cmd = [sys.executable, str(LOADGEN), "--sock", t.sock, "--path", path, "--conns", "16",
           "--seconds", str(seconds), "--warmup", "0.2", "--pids", str(t.pid), "--engine", "c"]  # fmt: skip
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    done = subprocess.run(
        cmd, capture_output=True, timeout=seconds + 60, check=True, stdin=subprocess.DEVNULL
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def load_beside_burner(t: Target, path: str, seconds: float, cpu: int) -> dict[str, float]:
    """A load run while an idle-priority process keeps ``cpu`` busy a quarter of the time."""
    burner = subprocess.Popen([sys.executable, "-c", BURNER, str(cpu)], stdin=subprocess.DEVNULL)
    try:
        return load(t, path, seconds, cpu)
    finally:
        burner.kill()
        burner.wait()


def rows_for(path: str, runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """The table rows of one path."""

    def best(name: str) -> float:
        return max(r["rps"] for r in runs[name])

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    off, on, again = best("off"), best("policy+audit"), best("off, again")
    moff, mon = median("off", "rps"), median("policy+audit", "rps")
    soff, son = median("off", "serving_cpu_us_per_req"), median("policy+audit", "serving_cpu_us_per_req")
    writer = median("policy+audit", "daemon_cpu_us_per_req") - son
    n = len(runs["off"])
    probe = (
        [f"| `GET {path}` probe: off beside 25% idle-priority work on CPU 1, best of {n} | {off:,.0f} | "
         f"{best(PROBE):,.0f} | {best(PROBE) / off:.2f}x |"] if runs.get(PROBE) else []
    )  # fmt: skip
    return [
        f"| `GET {path}` req/s, best of {n} | {off:,.0f} | {on:,.0f} | **{on / off:.2f}x** |",
        f"| `GET {path}` req/s, median of {n} | {moff:,.0f} | {mon:,.0f} | {mon / moff:.2f}x |",
        f"| `GET {path}` serving process CPU per request | {soff:.1f} µs | {son:.1f} µs | "
        f"{son / soff:.2f}x |",
        f"| `GET {path}` audit writer CPU per request | | {writer:.1f} µs | |",
        f"| `GET {path}` noise: a second off daemon, best of {n} | {off:,.0f} | {again:,.0f} | "
        f"{again / off:.2f}x |",
        *probe,
    ]


def same_time_rows(targets: list[Target], rounds: int, seconds: float, cpus: tuple[int, int]) -> list[str]:
    """The same-time table's rows (bench/same_time.py): each pair loaded at once, equal shares of CPU 0."""
    serving_cpu, load_cpu = cpus
    by_name = {t.name: t for t in targets}
    rows = []
    with same_time.equal_groups([t.name for t in targets]) as groups:
        for writer_cpu, where in ((load_cpu, f"audit writer on CPU {load_cpu}"),
                                  (serving_cpu, f"audit writer on CPU {serving_cpu} too")):  # fmt: skip
            for t in targets:
                assert t.pid is not None
                same_time.place(t.pid, groups[t.name], serving_cpu, writer_cpu)
            pairs = [("policy+audit", where)]
            if writer_cpu == load_cpu:
                pairs.append(("off, again", "noise: a second off daemon"))
            for path in PATHS:
                for name, label in pairs:
                    b = by_name[name]
                    rates: list[tuple[float, float]] = []
                    for i in range(rounds):  # alternated start order: neither is always first
                        # The policy daemon's baseline alternates between the two off daemons too: one
                        # process can be a percent or two faster than an identical one (the noise row).
                        a = by_name["off, again" if b.name == "policy+audit" and i // 2 % 2 else "off"]
                        socks = [a.sock, b.sock] if i % 2 == 0 else [b.sock, a.sock]
                        r = same_time.load_together(socks, path, seconds, load_cpu)
                        rates.append((r[0], r[1]) if i % 2 == 0 else (r[1], r[0]))
                    ratios = sorted(y / x for x, y in rates)
                    off = statistics.median(x for x, _ in rates)
                    other = statistics.median(y for _, y in rates)
                    rows.append(
                        f"| `GET {path}`, {label} | {off:,.0f} | {other:,.0f} | "
                        f"**{statistics.median(ratios):.2f}x** ({ratios[0]:.2f}-{ratios[-1]:.2f}) |"
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--same-time-rounds", type=int, default=12)
    ap.add_argument("--same-time-seconds", type=float, default=1.0)
    args = ap.parse_args(argv)
    pinned = len(os.sched_getaffinity(0)) >= 2
    serving_cpu, load_cpu = sorted(os.sched_getaffinity(0))[:2] if pinned else (None, None)
    daemons = [OwnDaemon(flags, name=name) for name, flags in VARIANTS.items()]
    try:
        targets = [d.start() for d in daemons]
        if serving_cpu is not None:
            for t in targets:
                assert t.pid is not None
                # The main thread only (a thread id): the writer process and helper threads stay free.
                os.sched_setaffinity(t.pid, {serving_cpu})
        rows = []
        for path in PATHS:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in [*VARIANTS, PROBE]}
            for i in range(args.rounds):
                for t in targets if i % 2 == 0 else targets[::-1]:  # alternated: drift hits all alike
                    runs[t.name].append(load(t, path, args.seconds, load_cpu))
                if load_cpu is not None:
                    runs[PROBE].append(load_beside_burner(targets[0], path, args.seconds, load_cpu))
            rows += rows_for(path, runs)
        why_not = same_time.available()
        together = (
            same_time_rows(targets, args.same_time_rounds, args.same_time_seconds, (serving_cpu, load_cpu))
            if why_not is None and serving_cpu is not None and load_cpu is not None
            else []
        )
        n, secs = args.same_time_rounds, args.same_time_seconds
        print(f"{len(os.sched_getaffinity(0))} CPUs\n")
        print(f"Same time, equal shares of CPU {serving_cpu} (bench/same_time.py), load generators on CPU "
              f"{load_cpu}; medians of {n} runs of {secs} s; ratio: the median run's (range)\n")  # fmt: skip
        if together:
            print("| pair: off and | off req/s | other req/s | ratio (range) |\n| --- | ---: | ---: | ---: |")
            print("\n".join(together) + "\n")
        else:
            print(f"(not measured: {why_not or 'needs two CPUs'})\n")
        where = (f"serving thread on CPU {serving_cpu}, load generator on CPU {load_cpu}" if pinned
                 else "one CPU: nothing pinned")  # fmt: skip
        print(f"In turn: {where}; {args.rounds} runs of {args.seconds} s each\n")
        print("| measure | off | policy + audit (or as the row says) | ratio |\n| --- | ---: | ---: | ---: |")
        print("\n".join(rows))
    finally:
        for d in daemons:
            d.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
