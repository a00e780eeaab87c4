"""``dockyard``: a small client CLI on the docker SDK, plus the admin views only dockyard has.

The docker SDK does the HTTP; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import docker.errors

from dockyard import __version__
from dockyard.cli import admin
from dockyard.client.connect import connect


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"Client: dockyard {__version__}")
    info: dict[str, Any] = connect(args.host).version()
    print(f"Server: {info.get('Platform', {}).get('Name', 'unknown')} {info.get('Version')}")
    print(f" API version: {info.get('ApiVersion')} (minimum version {info.get('MinAPIVersion')})")
    print(f" OS/Arch: {info.get('Os')}/{info.get('Arch')}")
    print(f" Kernel: {info.get('KernelVersion')}")
    return 0


def _cmd_ps(args: argparse.Namespace) -> int:
    rows = connect(args.host).api.containers(all=args.all)
    if args.quiet:
        for row in rows:
            print(row["Id"][:12])
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    now = time.time()
    for row in rows:
        command = row.get("Command", "")
        command = command if len(command) <= 20 else command[:19] + "…"
        table.append((
            row["Id"][:12], row.get("Image", ""), f'"{command}"', _ago(now - row.get("Created", now)),
            row.get("Status", ""), ",".join(n.lstrip("/") for n in row.get("Names") or []),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _ago(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} seconds ago"


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    p = argparse.ArgumentParser(prog="dockyard", description="dockyard client")
    p.add_argument(
        "-H", "--host", help="daemon socket (default: $DOCKER_HOST or unix:///var/run/dockyard.sock)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="show client and server versions").set_defaults(func=_cmd_version)
    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument(
        "-a", "--all", action="store_true", help="show all containers (default shows just running)"
    )
    ps.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    ps.set_defaults(func=_cmd_ps)
    admin.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dockyard``."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except docker.errors.APIError as exc:
        print(f"Error response from daemon: {exc.explanation}", file=sys.stderr)
        return 1
    except docker.errors.DockerException as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 1
    return code


def entry() -> None:
    """Console-script wrapper that exits with ``main``'s status."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
