"""Our own client CLI, ``dockyard``, against a real daemon."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import Daemon


def _dockyard(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "-H", daemon.host, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_version_names_the_server_and_api(daemon: Daemon) -> None:
    proc = _dockyard(daemon, "version")
    assert proc.returncode == 0, proc.stderr
    assert "Server: dockyard" in proc.stdout
    assert "API version: 1.47 (minimum version 1.24)" in proc.stdout


def test_ps_lists_running_and_all(daemon: Daemon, unique_name: str) -> None:
    daemon.cli("run", "-d", "--name", unique_name, "busybox", "sleep", "30")
    stopped = unique_name + "-x"
    daemon.cli("run", "--name", stopped, "busybox", "true")
    try:
        running = _dockyard(daemon, "ps").stdout
        assert unique_name in running and stopped not in running
        everything = _dockyard(daemon, "ps", "-a").stdout
        assert stopped in everything and "Exited (0)" in everything
        ids = _dockyard(daemon, "ps", "-q").stdout.split()
        assert daemon.cli("inspect", "-f", "{{.Id}}", unique_name).stdout.decode()[:12] in ids
    finally:
        daemon.cli("rm", "-f", unique_name, stopped)


def test_unreachable_daemon_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "-H", "unix:///nonexistent/d.sock", "version"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "dockyard:" in proc.stderr and "Traceback" not in proc.stderr
