"""The benchmark's markdown report: one table with a dockyard/dockerd ratio and the goals."""

from __future__ import annotations

import os
import platform

from harness import Bench, Row


def fmt(v: float | None, unit: str) -> str:
    """A value with sensible precision ('n/a' when missing)."""
    if v is None:
        return "n/a"
    if unit == "req/s":
        return f"{v:,.0f} {unit}"
    digits = 2 if abs(v) < 10 else 1 if abs(v) < 1000 else 0
    return f"{v:,.{digits}f} {unit}"


def _ratio(row: Row) -> str:
    a, b = row.values.get("dockyard"), row.values.get("dockerd")
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def _status(row: Row) -> str:
    if row.check is None:
        return ""
    ok = row.check(row.values)
    return "n/a" if ok is None else "met" if ok else "**missed**"


def markdown(b: Bench, versions: dict[str, str], quick: bool) -> str:
    """Render the collected rows, versions and notes.

    Args:
        b: The finished run.
        versions: Server version string per target name.
        quick: Whether this was a smoke run (few iterations).

    Returns:
        The report as markdown text.
    """
    names = [t.name for t in b.targets]
    ref = "dockerd" in names
    lines = [
        f"# dockyard benchmark {b.run_id}{' (--quick: smoke run, few iterations)' if quick else ''}",
        "",
        f"Host: Linux {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        + "; ".join(f"{n}: {versions.get(n, '?')}" for n in names)
        + ("" if ref else ". No reference daemon: ratios and relative goals are n/a."),
        "Measured interleaved (dockyard, dockerd, dockyard, ...); compare ratios from one run, not absolute "
        "times across runs. Ratio is dockyard/dockerd.",
        "",
        "| Measure | dockyard | dockerd | ratio | goal | status |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in b.rows:
        cells = [
            row.measure,
            fmt(row.values.get("dockyard"), row.unit),
            fmt(row.values.get("dockerd"), row.unit) if ref else "-",
            _ratio(row),
            row.goal,
            _status(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if b.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in b.notes)]
    return "\n".join(lines) + "\n"
