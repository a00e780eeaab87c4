"""Admin subcommands on local files (no daemon needed): ``audit verify``, ``audit tail``, ``policy check``.

The audit log is root-only (mode 0600); run these as root or as whoever the log was made readable for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockyard.errors import InvalidParameter
from dockyard.security.audit import log_files, read_records, verify
from dockyard.security.policy import load_policy


def register(sub: Any) -> None:
    """Add ``audit`` and ``policy`` to the CLI's subparsers."""
    audit = sub.add_parser("audit", help="verify or follow the daemon's audit log").add_subparsers(
        dest="audit_command", required=True
    )
    v = audit.add_parser("verify", help="check the hash chain (rotated files included)")
    v.add_argument("path", type=Path)
    v.set_defaults(func=_cmd_verify)
    t = audit.add_parser("tail", help="print audit records (newest last)")
    t.add_argument("path", type=Path)
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    t.add_argument("--caller", type=int, metavar="UID", help="only records of this uid")
    t.add_argument("-n", "--lines", type=int, default=20, help="records to show first (default 20)")
    t.set_defaults(func=_cmd_tail)
    policy = sub.add_parser("policy", help="authorization policy tools").add_subparsers(
        dest="policy_command", required=True
    )
    c = policy.add_parser("check", help="validate a policy file")
    c.add_argument("file", type=Path)
    c.set_defaults(func=_cmd_policy_check)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        result = verify(args.path)
    except OSError as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"audit log BROKEN after {result.lines - 1} good records: {result.problem}", file=sys.stderr)
        return 1
    files = len(log_files(args.path))
    print(f"audit log intact: {result.lines} records in {files} file(s); head {result.head}")
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    try:
        records = [r for r in read_records(args.path) if _wanted(r, args.caller)]
    except OSError as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 2
    for record in records[-args.lines :] if args.lines > 0 else []:
        print(_format(record), flush=True)
    if args.follow:
        for record in _follow(args.path):
            if _wanted(record, args.caller):
                print(_format(record), flush=True)
    return 0


def _wanted(record: dict[str, Any], uid: int | None) -> bool:
    return uid is None or (record.get("caller") or {}).get("uid") == uid


def _format(r: dict[str, Any]) -> str:
    who = r.get("caller") or {}
    ident = f"cn={who['cert_cn']}" if who.get("cert_cn") else f"uid={who.get('uid')} pid={who.get('pid')}"
    status = r.get("status", "-")
    decision = f" {r['decision']}:{r.get('rule')}" if "decision" in r else ""
    return (f"{r.get('time')} {ident} {r.get('method')} {r.get('path')} {r.get('operation')} "
            f"{r.get('phase')} {status}{decision}")  # fmt: skip


def _follow(path: Path) -> Iterator[dict[str, Any]]:
    """New records as they are appended; follows the live file across rotations (by inode)."""
    fh = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    fh.seek(0, 2)
    inode = path.stat().st_ino
    buf = b""
    try:
        while True:
            chunk = fh.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
                continue
            time.sleep(0.2)
            try:
                if path.stat().st_ino != inode:
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115
                    inode = path.stat().st_ino
            except FileNotFoundError:
                continue
    finally:
        fh.close()


def _cmd_policy_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except InvalidParameter as exc:
        print(f"invalid policy: {exc.message}", file=sys.stderr)
        return 1
    print(f"policy ok: mode {policy.mode}, default {'allow' if policy.default_allow else 'deny'}, "
          f"{len(policy.rules)} rule(s): {', '.join(r.name for r in policy.rules)}")  # fmt: skip
    return 0
