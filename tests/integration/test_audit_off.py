"""``--audit-log off``: the explicit opt-out (used to measure what auditing costs) and relative paths."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Daemon, poll

pytestmark = pytest.mark.root


def test_audit_off_writes_no_log_and_warns(seed_root: Path) -> None:
    d = Daemon(Path(tempfile.mkdtemp(prefix="dy-", dir="/tmp")), seed_root, ["--audit-log", "off"])
    d.start()
    try:
        d.cli("run", "--rm", "busybox", "true")
        assert not (d.data_root / "audit.log").exists()
        assert not (d.base / "off").exists()
        assert "API calls are NOT audited" in d.log_path.read_text()
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)


def test_relative_audit_path_is_taken_from_the_start_directory(seed_root: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="dy-", dir="/tmp"))
    d = Daemon(base, seed_root, ["--audit-log", "rel-audit.log"])
    old = os.getcwd()
    os.chdir(base)  # the daemon inherits this working directory, then moves to / internally
    try:
        d.start()
    finally:
        os.chdir(old)
    try:
        d.cli("ps")
        log = base / "rel-audit.log"
        poll(lambda: log.read_text().count('"operation":"ContainerList"') >= 1, what="the ps record")
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)
