"""The audit log of a real daemon when its disk fills up: mutating calls are refused, reads continue."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="dy-auditfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
    shutil.rmtree(mnt, ignore_errors=True)


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as fh:
        while True:
            fh.write(b"\0" * 4096)
    return filler


def test_full_disk_refuses_mutating_calls_and_recovers(seed_root: Path, tiny_fs: Path) -> None:
    log = tiny_fs / "audit.log"
    d = Daemon(Path(tempfile.mkdtemp(prefix="dy-", dir="/tmp")), seed_root, ["--audit-log", str(log)])
    d.start()
    try:
        d.cli("ps")
        filler = _fill(tiny_fs)
        created = 0
        for _ in range(40):  # the log's last page has room for a few records: use it up
            refused = d.cli("create", "busybox", "true", check=False)
            if refused.returncode != 0:
                break
            created += 1
        assert refused.returncode != 0
        assert b"audit log unavailable" in refused.stderr and b"No space left on device" in refused.stderr
        assert len(d.api.containers(all=True)) == created  # nothing was created unaudited
        assert d.cli("ps").returncode == 0 and d.cli("images").returncode == 0  # reads continue
        filler.unlink()
        deadline = time.monotonic() + 10
        while d.cli("create", "busybox", "true", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the daemon did not recover when space came back"
            time.sleep(0.2)
        d.cli("container", "prune", "-f")
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)
    ok = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "audit", "verify", str(log)],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr  # the chain survived the outage (unwritten bytes were retried)


def _writer_pids(daemon_pid: int) -> list[int]:
    """The audit writers that are children of ``daemon_pid`` (other tests' daemons have their own)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == daemon_pid and b"dockyard.security.audit_writer" in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
    return found


def test_the_chain_survives_kill_9_and_a_quick_restart(seed_root: Path) -> None:
    """A daemon killed with -9: its writer writes what it was sent and exits on its own; the restarted
    daemon's writer continues the same chain (test_audit.py shows the log's lock keeping two writers from
    interleaving, which a restart faster than this one could cause)."""
    d = Daemon(Path(tempfile.mkdtemp(prefix="dy-", dir="/tmp")), seed_root)
    d.start()
    log = d.data_root / "audit.log"
    try:
        for _ in range(20):
            d.cli("ps")
        d.cli("create", "--name", "before-crash", "busybox", "true")
        assert d.proc is not None
        old_writers = _writer_pids(d.proc.pid)
        assert len(old_writers) == 1
        d.kill9()
        d.start()  # at once: the old writer may still be writing
        for _ in range(20):
            d.cli("ps")
        d.cli("rm", "before-crash")
        for pid in old_writers:  # the old writer ended on its own (its stdin closed with the daemon)
            deadline = time.monotonic() + 10
            while (
                Path(f"/proc/{pid}").exists() and b"audit_writer" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ):
                assert time.monotonic() < deadline, "the killed daemon's audit writer did not exit"
                time.sleep(0.05)
        d.stop()  # the writer writes what is queued and exits with the daemon
        ok = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "audit", "verify", str(log)],
                            capture_output=True, text=True)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        text = log.read_text()
        assert '"operation":"ContainerCreate"' in text and '"operation":"ContainerDelete"' in text
    finally:
        d.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)
