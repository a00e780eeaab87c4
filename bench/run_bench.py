"""dockyard's own benchmark (``make bench``): a private dockyardd, optionally side by side with a reference
Docker daemon, measured interleaved; prints a markdown table with ratios and the project's goals.

Usage: ``bench/run_bench.py [--reference SOCKET] [--start-reference] [--quick] [--out FILE.md]``

It reports and never asserts: the exit status is 0 even when a goal is missed (non-zero only when the
benchmark itself could not run). All traffic goes over unix sockets on this machine; every container it
creates carries the label ``dockyard.bench=<run id>`` and is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import steps
from daemons import REFERENCE_SCRIPT, OwnDaemon, Target, reference_target, start_reference, stop_reference
from harness import API, IMAGE, QUICK, Bench, Config
from report import markdown


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description="dockyard benchmark, side by side with a reference dockerd")
    ap.add_argument("--reference", metavar="SOCKET", help="unix socket of a running Docker daemon to compare")
    ap.add_argument("--start-reference", action="store_true", help="start the reference with start-dockerd")
    ap.add_argument("--quick", action="store_true", help="smoke run: few iterations")
    ap.add_argument("--out", metavar="FILE.md", help="also write the report to this file")
    return ap.parse_args(argv)


def _version(t: Target) -> str:
    try:
        v = t.api.json("GET", f"{API}/version", expect=(200,))
        return f"{v.get('Version')} (API {v.get('ApiVersion')})"
    except Exception as exc:
        return f"? ({exc})"


def _reference(a: argparse.Namespace, b: Bench) -> tuple[Target | None, bool]:
    try:
        if a.reference:
            return reference_target(a.reference), False
        if a.start_reference:
            started = start_reference()
            if started is None:
                b.note(f"reference skipped: {REFERENCE_SCRIPT} does not exist")
                return None, False
            return started
    except Exception as exc:
        b.note(f"reference skipped: {exc}")
    return None, False


def _check_image(b: Bench, t: Target) -> bool:
    try:
        t.api.request("GET", f"{API}/images/{IMAGE}/json", expect=(200,))
        return True
    except Exception as exc:
        b.note(f"{t.name} skipped: image {IMAGE} is not there ({exc})")
        return False


def _measure(b: Bench) -> None:
    plan: list[tuple[str, Callable[[], object]]] = []
    idle: dict[str, set[int]] = {}
    plan.append(("idle memory", lambda: idle.update(steps.step_memory_idle(b))))
    plan.append(("docker run (CLI)", lambda: steps.step_cli_run(b)))
    plan.append(("run via API", lambda: steps.step_api_run(b)))
    plan.append(("/_ping load", lambda: steps.step_ping(b)))
    plan.append(("running containers and exec", lambda: steps.step_memory_running(b, idle)))
    plan.append(("container list", lambda: steps.step_list(b)))
    for name, fn in plan:
        b.log(f"step: {name}")
        t0 = time.monotonic()
        try:
            fn()
        except Exception as exc:
            b.note(f"step {name!r} failed: {type(exc).__name__}: {str(exc)[:300]}")
        b.log(f"step: {name} took {time.monotonic() - t0:.1f} s")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report.

    Args:
        argv: Command-line arguments (default: sys.argv[1:]).

    Returns:
        0 when the benchmark ran (goals missed or not), 1 when it could not run, 130 when interrupted.
    """
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    cfg: Config = QUICK if a.quick else Config()
    b = Bench(targets=[], cfg=cfg, run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    own = OwnDaemon()
    ref: Target | None = None
    ref_started = False
    status = 0
    versions: dict[str, str] = {}
    try:
        b.log(f"starting dockyardd in {own.base}")
        b.targets.append(own.start())
        ref, ref_started = _reference(a, b)
        if ref is not None and _check_image(b, ref):
            b.targets.append(ref)
            stale = b.cleanup(ref, any_run=True)
            if stale:
                b.note(f"dockerd: removed {stale} containers left by an earlier interrupted benchmark")
        versions.update({t.name: _version(t) for t in b.targets})
        b.log(f"targets: {versions}; run id {b.run_id}")
        _measure(b)
    except KeyboardInterrupt:
        b.note("interrupted: the report is partial")
        status = 130
    except Exception as exc:
        b.log(f"benchmark could not run: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        # A second Ctrl-C must not leave containers, shims or mounts behind: cleanup runs to its end.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for t in b.targets:
            b.log(f"{t.name}: removed {b.cleanup(t)} leftover containers")
            t.api.close()
        own.cleanup()
        if ref is not None and ref_started:
            b.log("stopping the reference dockerd this run started")
            stop_reference(ref)
    if status == 1:
        return status
    text = markdown(b, versions, a.quick)
    sys.stdout.write(text)
    if a.out:
        Path(a.out).write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
