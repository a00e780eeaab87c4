"""Shared machinery of the benchmark steps: configuration, the interleaved A B A B loop, container
helpers that label everything they create, and the result rows the report is made of."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from daemons import Target

LABEL = "dockyard.bench"
IMAGE = "busybox:latest"
API = "/v1.41"  # both dockerd 20.10 and dockyard speak it
DOCKER_CLI = shutil.which("docker", path="/usr/local/bin:/usr/bin:/bin") or "docker"
T = TypeVar("T")
Values = dict[str, float | None]
Check = Callable[[Values], bool | None]


@dataclass(frozen=True)
class Config:
    """Iteration counts and time limits; ``quick`` makes a smoke run."""

    run_n: int = 20
    load_seconds: float = 0.5
    load_reps: int = 16
    load_conns: int = 16
    list_containers: int = 500
    list_n: int = 20
    mem_containers: int = 10
    exec_n: int = 10
    step_budget_s: float = 180.0


QUICK = Config(run_n=3, load_seconds=0.5, load_reps=2, list_n=5, exec_n=3, step_budget_s=60.0)


@dataclass(frozen=True)
class Row:
    """One line of the report. ``better`` says which direction wins: 'lower' or 'higher'."""

    measure: str
    unit: str
    values: Values
    goal: str = ""
    better: str = "lower"
    check: Check | None = None


@dataclass
class Bench:
    """The run's state: targets, configuration and collected rows."""

    targets: list[Target]
    cfg: Config
    run_id: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: dict[str, set[str]] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        """Progress on stderr (the report goes to stdout)."""
        sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stderr.flush()

    def note(self, msg: str) -> None:
        """Keep a remark for the report and log it."""
        self.notes.append(msg)
        self.log(msg)

    def interleave(
        self, label: str, fn: Callable[[Target], T], n: int, warmup: int = 1
    ) -> dict[str, list[T]]:
        """Call ``fn`` on each target in turn (A B A B ...), ``warmup + n`` rounds, within the step budget.

        A target that fails three times in a row is dropped from the step; failures are noted.

        Returns:
            Samples per target name (warm-up rounds excluded).
        """
        samples: dict[str, list[T]] = {t.name: [] for t in self.targets}
        fails = dict.fromkeys(samples, 0)
        active = list(self.targets)
        deadline = time.monotonic() + self.cfg.step_budget_s
        for i in range(warmup + n):
            if time.monotonic() > deadline:
                self.note(f"{label}: stopped after {i} rounds (time budget {self.cfg.step_budget_s:.0f} s)")
                break
            for t in list(active):
                try:
                    value = fn(t)
                except Exception as exc:
                    fails[t.name] += 1
                    self.note(f"{label} on {t.name}: {type(exc).__name__}: {str(exc)[:300]}")
                    if fails[t.name] >= 3:
                        active.remove(t)
                    continue
                fails[t.name] = 0
                if i >= warmup:
                    samples[t.name].append(value)
        return samples

    # --- containers, always labelled with the run id so cleanup finds every one

    def create(self, t: Target, cmd: list[str]) -> str:
        """Create a container of the bench image running ``cmd``; returns its id."""
        spec = {
            "Image": IMAGE,
            "Cmd": cmd,
            "Labels": {LABEL: self.run_id},
            "HostConfig": {"NetworkMode": "none"},
        }
        cid: str = t.api.json("POST", f"{API}/containers/create", spec, expect=(201,))["Id"]
        self.created.setdefault(t.name, set()).add(cid)
        return cid

    def start(self, t: Target, cid: str) -> None:
        """Start a container."""
        t.api.request("POST", f"{API}/containers/{cid}/start", expect=(204, 304))

    def wait(self, t: Target, cid: str) -> int:
        """Wait for a container to exit; returns its exit code."""
        code: int = t.api.json("POST", f"{API}/containers/{cid}/wait", expect=(200,))["StatusCode"]
        return code

    def remove(self, t: Target, cid: str, force: bool = False) -> None:
        """Delete a container (404 counts as gone)."""
        t.api.request("DELETE", f"{API}/containers/{cid}{'?force=1' if force else ''}", expect=(204, 404))
        self.created.get(t.name, set()).discard(cid)

    def cleanup(self, t: Target, any_run: bool = False) -> int:
        """Force-remove every container of this run on ``t`` (tracked ids and label matches).

        Args:
            t: The daemon.
            any_run: Also remove containers left by earlier, interrupted runs (any ``dockyard.bench`` label).

        Returns:
            How many containers were removed.
        """
        ids = set(self.created.get(t.name, set()))
        try:
            label = LABEL if any_run else f"{LABEL}={self.run_id}"
            flt = quote(f'{{"label":["{label}"]}}')
            listed = t.api.json("GET", f"{API}/containers/json?all=1&filters={flt}", expect=(200,))
            ids |= {c["Id"] for c in listed}
        except Exception as exc:
            self.log(f"cleanup listing on {t.name} failed: {exc}")
        removed = 0
        for cid in ids:
            try:
                self.remove(t, cid, force=True)
                removed += 1
            except Exception as exc:
                self.log(f"cleanup of {cid[:12]} on {t.name} failed: {exc}")
        return removed

    def cli(self, t: Target, *args: str, timeout: float = 60.0) -> float:
        """Run the docker CLI against ``t``; returns the wall time in seconds.

        Raises:
            RuntimeError: The CLI exited non-zero.
        """
        env = {**os.environ, "DOCKER_HOST": t.host, "DOCKER_CLI_HINTS": "false"}
        env.pop("DOCKER_CONTEXT", None)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [DOCKER_CLI, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-300:]
            raise RuntimeError(f"docker {' '.join(args[:3])} exited {proc.returncode}: {err}")
        return dt


def median(values: list[float]) -> float | None:
    """The median, or None for no samples."""
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def wall_ms(fn: Callable[[], Any]) -> float:
    """Milliseconds ``fn()`` takes."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3
