"""The benchmark's measurements. Each step runs on every target interleaved, is bounded in iterations and
time, removes what it created, and appends rows to the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import procinfo
from daemons import Target
from harness import API, IMAGE, LABEL, Bench, Check, Row, median, wall_ms
from uhttp import HTTPStatusError

LOADGEN = Path(__file__).with_name("loadgen.py")
PHASES = ("create", "start", "wait", "delete", "total")


def _ratio_at_most(limit: float) -> Check:
    def check(v: dict[str, float | None]) -> bool | None:
        a, b = v.get("dockyard"), v.get("dockerd")
        return None if a is None or not b else a / b <= limit

    return check


def _ratio_at_least(limit: float) -> Check:
    def check(v: dict[str, float | None]) -> bool | None:
        a, b = v.get("dockyard"), v.get("dockerd")
        return None if a is None or not b else a / b >= limit

    return check


def _below(limit: float) -> Check:
    def check(v: dict[str, float | None]) -> bool | None:
        a = v.get("dockyard")
        return None if a is None else a < limit

    return check


def step_cli_run(b: Bench) -> None:
    """(1) ``docker run --rm --network none busybox true`` through the real CLI."""
    label = f"{LABEL}={b.run_id}"
    s = b.interleave(
        "cli run",
        lambda t: b.cli(t, "run", "--rm", "--network", "none", "--label", label, IMAGE, "true") * 1e3,
        b.cfg.run_n,
    )
    vals = {k: median(v) for k, v in s.items()}
    n = min((len(v) for v in s.values()), default=0)
    b.rows.append(Row(f"`docker run --rm --network none busybox true` (CLI, median of {n})", "ms", vals,
                      "≤ 1/3 of dockerd", check=_ratio_at_most(1 / 3)))  # fmt: skip


def _api_run_once(b: Bench, t: Target) -> dict[str, float]:
    cid = ""
    try:
        t0 = time.perf_counter()
        cid = b.create(t, ["true"])
        t1 = time.perf_counter()
        b.start(t, cid)
        t2 = time.perf_counter()
        code = b.wait(t, cid)
        t3 = time.perf_counter()
        b.remove(t, cid)
        t4 = time.perf_counter()
        cid = ""
    finally:
        if cid:
            b.remove(t, cid, force=True)
    if code != 0:
        raise RuntimeError(f"container exited {code}")
    stamps = (t0, t1, t2, t3, t4)
    out = {p: (stamps[i + 1] - stamps[i]) * 1e3 for i, p in enumerate(PHASES[:-1])}
    out["total"] = (t4 - t0) * 1e3
    return out


def step_api_run(b: Bench) -> None:
    """(2) The same flow as raw API calls, with a median per phase."""
    s = b.interleave("api run", lambda t: _api_run_once(b, t), b.cfg.run_n)
    n = min((len(v) for v in s.values()), default=0)
    for phase in PHASES:
        vals = {k: median([d[phase] for d in v]) for k, v in s.items()}
        what = "create+start+wait+delete" if phase == "total" else phase
        b.rows.append(Row(f"API run: {what} (median of {n})", "ms", vals))


def _load(b: Bench, t: Target, seconds: float, warmup: float) -> dict[str, object]:
    pids = procinfo.descendants(t.pid, procinfo.process_table()) if t.pid else set()
    cmd = [sys.executable, str(LOADGEN), "--sock", t.sock, "--path", "/_ping", "--conns",
           str(b.cfg.load_conns), "--seconds", str(seconds), "--warmup", str(warmup),
           "--pids", ",".join(map(str, sorted(pids))), "--engine", "c"]  # fmt: skip
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:  # the generator on a CPU of its own; the daemons go where the scheduler puts them
        cmd += ["--cpu", str(cpus[-1])]
    proc = subprocess.run(cmd, capture_output=True, timeout=seconds + warmup + 90, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.decode(errors='replace')[-500:]}")
    result: dict[str, object] = json.loads(proc.stdout)
    if result["errors"]:
        b.note(f"/_ping load on {t.name}: {result['errors']} errors, e.g. {result['error_samples']}")
    return result


def step_ping(b: Bench) -> None:
    """(3) ``GET /_ping`` throughput over keep-alive connections, and the daemon's CPU per request.

    Many short runs, each daemon's throughput being its best one: on a small VM the machine's own speed
    swings by up to 2x from second to second, and medians of a few 3 s runs of two identical daemons differed
    by 20% (bench/security_overhead.py says more). The load comes from bench/uload.c on a CPU of its own.
    """
    # Unmeasured: lets the scheduler spread a fresh single-threaded server and the generator over cores.
    b.interleave("ping pre-load", lambda t: _load(b, t, 0.5, 0.2), 0, warmup=1)
    s = b.interleave("ping load", lambda t: _load(b, t, b.cfg.load_seconds, 0.2), b.cfg.load_reps, warmup=0)
    n = b.cfg.load_reps
    for key, name, unit, better in (
        ("rps", f"`GET /_ping` throughput, {b.cfg.load_conns} keep-alive connections (best of {n})", "req/s",
         "higher"),
        ("p50_ms", f"`GET /_ping` latency under that load (p50, median of {n})", "ms", "lower"),
        ("daemon_cpu_us_per_req", f"daemon CPU per `/_ping` (process tree, median of {n})", "µs", "lower"),
    ):  # fmt: skip
        numbers = {k: [x for r in v if isinstance(x := r.get(key), int | float)] for k, v in s.items()}
        if key == "rps":
            best = {k: max(v) if v else None for k, v in numbers.items()}
            b.rows.append(Row(name, unit, best, "≥ dockerd", "higher", _ratio_at_least(1.0)))
        else:
            b.rows.append(Row(name, unit, {k: median(v) for k, v in numbers.items()}, better=better))


def step_list(b: Bench) -> None:
    """(4) ``GET /containers/json?all=1`` latency with many created (not started) containers."""
    want = b.cfg.list_containers
    ids: dict[str, list[str]] = {t.name: [] for t in b.targets}
    deadline = time.monotonic() + b.cfg.step_budget_s * 2
    try:
        while time.monotonic() < deadline and any(len(ids[t.name]) < want for t in b.targets):
            for t in b.targets:  # chunks of 25, interleaved, so both see the same machine load
                for _ in range(min(25, want - len(ids[t.name]))):
                    ids[t.name].append(b.create(t, ["true"]))
        have = {k: len(v) for k, v in ids.items()}
        b.log(f"created for the list test: {have}")

        def sample(t: Target) -> float:
            return wall_ms(lambda: t.api.request("GET", f"{API}/containers/json?all=1", expect=(200,)))

        s = b.interleave("list", sample, b.cfg.list_n, warmup=2)
        n = min(have.values(), default=0)
        b.rows.append(Row(f"`GET /containers/json?all=1` with {n} created containers (median)", "ms",
                          {k: median(v) for k, v in s.items()}, "≤ 1/2 of dockerd",
                          check=_ratio_at_most(0.5)))  # fmt: skip
    finally:
        for t in b.targets:
            for cid in ids[t.name]:
                b.remove(t, cid, force=True)


def _daemon_tree(t: Target) -> set[int]:
    return procinfo.descendants(t.pid, procinfo.process_table()) if t.pid else set()


def step_memory_idle(b: Bench) -> dict[str, set[int]]:
    """(5a) Idle daemon RSS; returns each daemon's idle process tree for the per-container step."""
    trees = {t.name: _daemon_tree(t) for t in b.targets}
    vals = {t.name: (procinfo.rss_mb(trees[t.name]) if trees[t.name] else None) for t in b.targets}
    b.rows.append(Row("idle daemon RSS (daemon process tree)", "MB", vals, "dockyard < 60 MB",
                      check=_below(60.0)))  # fmt: skip
    return trees


def step_memory_running(b: Bench, idle: dict[str, set[int]]) -> None:
    """(5b) RSS of the per-container helpers with sleeping containers, then (6) exec, on those containers."""
    k = b.cfg.mem_containers
    ids: dict[str, list[str]] = {t.name: [] for t in b.targets}
    try:
        for t in b.targets:
            for _ in range(k):
                cid = b.create(t, ["sleep", "100000"])
                ids[t.name].append(cid)
                b.start(t, cid)
        time.sleep(1.0)  # let shims settle to their steady state
        per: dict[str, float | None] = {}
        for t in b.targets:
            pids = [int(t.api.json("GET", f"{API}/containers/{c}/json", expect=(200,))["State"]["Pid"])
                    for c in ids[t.name]]  # fmt: skip
            helpers = procinfo.helper_pids(pids, idle[t.name], procinfo.process_table())
            per[t.name] = procinfo.rss_mb(helpers) / k if helpers else None
            names = sorted({procinfo.proc_stat(p).comm for p in helpers if os.path.exists(f"/proc/{p}")})
            b.log(f"{t.name}: {len(helpers)} helper processes for {k} containers: {', '.join(names)}")
        b.rows.append(Row(f"RSS per running container (helper processes, {k} running `sleep`)", "MB", per,
                          "dockyard < 3 MB", check=_below(3.0)))  # fmt: skip
        step_exec(b, {name: v[0] for name, v in ids.items() if v})
    finally:
        for t in b.targets:
            for cid in ids[t.name]:
                b.remove(t, cid, force=True)


def _exec_supported(t: Target, cid: str) -> bool:
    try:
        status, _ = t.api.request("POST", f"{API}/containers/{cid}/exec", {"Cmd": ["true"]})
    except (OSError, HTTPStatusError):
        return False
    return status == 201


def step_exec(b: Bench, running: dict[str, str]) -> None:
    """(6) ``docker exec C true``, for daemons that answer ``POST /containers/{id}/exec`` with 201."""
    supported = {t.name for t in b.targets if t.name in running and _exec_supported(t, running[t.name])}
    s = b.interleave(
        "exec",
        lambda t: b.cli(t, "exec", running[t.name], "true") * 1e3 if t.name in supported else None,
        b.cfg.exec_n,
    )
    vals = {k: (median([x for x in v if x is not None]) if k in supported else None) for k, v in s.items()}
    b.rows.append(Row("`docker exec C true` (CLI, median)", "ms", vals))
    for t in b.targets:
        if t.name not in supported:
            b.note(f"exec: {t.name} does not answer POST /containers/{{id}}/exec with 201: n/a")
