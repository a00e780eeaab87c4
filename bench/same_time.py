"""Two daemons loaded at the same time, each with an equal share of one CPU: their throughput ratio is the
ratio of their CPU cost per request, and the machine's speed swings cancel out.

Why: on a shared VM the speed of a CPU changes by up to 2x from one second to the next (host contention),
so two daemons loaded *in turn* are measured at different speeds; even the best of 24 alternated runs left
two identical daemons 5-15% apart on a bad day. Loaded at the same time on the same CPU, both see the same
speed at every instant. Each daemon's process tree (the serving process, its threads and children such as
the audit writer) goes into a cgroup of its own with the default CPU weight, so each tree gets half of the
CPU however many threads it has, and what a tree spends on anything (a writer included, when it is placed
on that CPU) comes out of its own half.

Needs root and a ``cpu`` cgroup controller (cgroup v1 ``/sys/fs/cgroup/cpu`` or v2 with ``cpu`` enabled
at the root), and two CPUs (one for the daemons, one for the load generators, bench/uload.c, one per
daemon). :func:`available` says why not, when it cannot run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from loadgen import c_loadgen
from procinfo import descendants, process_table

V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")


def _cgroup_root() -> Path | None:
    if (V1 / "cgroup.procs").exists():
        return V1
    controllers = V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return V2
    return None


def available() -> str | None:
    """None when the method can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (cgroups)"
    if len(os.sched_getaffinity(0)) < 2:
        return "needs two CPUs"
    if _cgroup_root() is None:
        return "no cpu cgroup controller"
    return None


@contextlib.contextmanager
def equal_groups(names: list[str]) -> Iterator[dict[str, Path]]:
    """One cpu cgroup per name, all with the default weight; removed at the end (members go back to the
    root group first, so that a still-running daemon does not keep them alive)."""
    root = _cgroup_root()
    assert root is not None, "check available() first"
    if root == V2:
        with contextlib.suppress(OSError):
            (root / "cgroup.subtree_control").write_text("+cpu")
    groups = {name: root / f"dyb-same-time-{os.getpid()}-{i}" for i, name in enumerate(names)}
    try:
        for g in groups.values():
            g.mkdir()
        yield groups
    finally:
        for g in groups.values():
            if g.exists():
                for pid in (g / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (root / "cgroup.procs").write_text(pid)
                with contextlib.suppress(OSError):
                    g.rmdir()


def place(pid: int, group: Path, cpu: int, children_cpu: int) -> None:
    """Put a daemon's process tree on ``cpu`` in ``group``, except its children (the audit writer) when
    they go to another CPU, ``children_cpu``: those stay in the root group. A group's weight is split
    between CPUs by its load on each, so a writer running in the group on the other CPU would lower the
    serving process's share of this one (measured: /_ping 0.85x instead of 0.94x)."""
    kids = descendants(pid, process_table()) - {pid}
    root = group.parent
    for p in [pid, *kids]:
        own = p == pid or children_cpu == cpu
        (group if own else root).joinpath("cgroup.procs").write_text(str(p))
        for tid in os.listdir(f"/proc/{p}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), {cpu if p == pid else children_cpu})


def load_together(socks: list[str], path: str, seconds: float, cpu: int, conns: int = 16) -> list[float]:
    """Load every socket at once (one bench/uload.c per socket, all on ``cpu``); each one's req/s.

    The generators start within a millisecond of each other and warm up for 0.3 s, so their measured
    windows overlap all but that millisecond.
    """
    binary = str(c_loadgen())
    procs = [
        subprocess.Popen(
            [binary, sock, path, str(conns), str(seconds), "0.3"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
        for sock in socks
    ]
    rates = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError(f"uload failed with status {p.returncode}")
        result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        rates.append(float(result["rps"]))
    return rates
