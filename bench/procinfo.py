"""Process accounting from /proc: process trees, CPU ticks and resident memory.

The benchmark reads /proc directly (stdlib only) because it must work on a user's machine without extra
packages, and the numbers it needs (utime+stime, VmRSS, socket owners) are one line each in /proc.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the benchmark uses."""

    pid: int
    ppid: int
    comm: str
    cpu_ticks: int


def proc_stat(pid: int) -> ProcStat:
    """Read one process's parent, name and CPU ticks (user + system, own + reaped children).

    Args:
        pid: Process id.

    Returns:
        The parsed stat line.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # comm may contain spaces and parentheses: split at the last ')'.
    end = raw.rfind(b")")
    comm = raw[raw.find(b"(") + 1 : end].decode("utf-8", "replace")
    fields = raw[end + 2 :].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ProcStat(pid, int(fields[1]), comm, ticks)


def process_table() -> dict[int, ProcStat]:
    """Every process visible in /proc, by pid."""
    table: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                table[int(name)] = proc_stat(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return table


def descendants(root: int, table: dict[int, ProcStat]) -> set[int]:
    """``root`` and all its descendants present in ``table``."""
    children: dict[int, list[int]] = {}
    for st in table.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in found or pid not in table:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


def tree_cpu_ticks(pids: set[int]) -> int:
    """Sum of CPU ticks of the given processes (vanished ones count zero)."""
    total = 0
    for pid in pids:
        try:
            total += proc_stat(pid).cpu_ticks
        except (OSError, IndexError, ValueError):
            continue
    return total


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pids: set[int]) -> float:
    """Summed RSS of the given processes in MiB."""
    return sum(rss_kb(p) for p in pids) / 1024


def cmdline(pid: int) -> str:
    """A process's command line joined by spaces ('' when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _listening_inodes(sock_path: str) -> set[str]:
    inodes: set[str] = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            # flag 0x10000 is __SO_ACCEPTCON: the listening socket, not accepted connections.
            if len(parts) >= 8 and parts[7] == sock_path and int(parts[3], 16) & 0x10000:
                inodes.add(f"socket:[{parts[6]}]")
    return inodes


def listener_pid(sock_path: str) -> int | None:
    """The top-most process holding the listening unix socket ``sock_path``.

    Args:
        sock_path: Filesystem path of the socket.

    Returns:
        The pid, or None when no process on this machine listens there.
    """
    wanted = _listening_inodes(os.path.realpath(sock_path)) | _listening_inodes(sock_path)
    if not wanted:
        return None
    holders: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") in wanted:
                    holders.append(int(name))
                    break
            except OSError:
                continue
    table = process_table()
    top = [p for p in holders if p in table and table[p].ppid not in holders]
    found = top or holders
    return found[0] if found else None


def helper_pids(container_pids: list[int], idle_tree: set[int], table: dict[int, ProcStat]) -> set[int]:
    """The per-container helper processes: ancestors of each container's init up to pid 1 or the daemon.

    This finds conmon (dockyard) and containerd-shim (dockerd) alike, since both sit between the daemon
    (or init, after they daemonize) and the container's first process. The walk stops at the daemon's
    idle tree (taken before any container ran), so a shim that is a child of containerd still counts as
    a helper rather than as daemon.

    Args:
        container_pids: ``State.Pid`` of each running container.
        idle_tree: The daemon's process tree before the containers started.
        table: A process table snapshot.

    Returns:
        Helper pids, without the containers' own processes.
    """
    payload: set[int] = set()
    for cp in container_pids:
        payload |= descendants(cp, table)
    helpers: set[int] = set()
    for cp in container_pids:
        pid = table[cp].ppid if cp in table else 0
        while pid > 1 and pid in table and pid not in idle_tree and pid not in helpers:
            helpers.add(pid)
            pid = table[pid].ppid
    return helpers - payload
