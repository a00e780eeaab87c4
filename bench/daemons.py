"""The daemons under test: a private dockyardd the benchmark starts itself, and an optional reference
Docker daemon (an already running one, or one started with the project's reference script)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procinfo import listener_pid
from uhttp import UnixHTTP, ping

# The reference Docker daemon script that sits beside the repository in our workspace (../shared).
REFERENCE_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "start-dockerd"
REFERENCE_SOCKET = "/tmp/ref-docker/docker.sock"


class Target:
    """A daemon measured by the benchmark: its socket, its pid and an API connection."""

    def __init__(self, name: str, sock: str, pid: int | None) -> None:
        self.name = name
        self.sock = sock
        self.pid = pid
        self.api = UnixHTTP(sock)

    @property
    def host(self) -> str:
        """The DOCKER_HOST value for the CLI."""
        return f"unix://{self.sock}"


class OwnDaemon:
    """A dockyardd on a temporary data root seeded with the offline images, stopped and wiped at the end."""

    def __init__(self, extra_args: list[str] | None = None, name: str = "dockyard") -> None:
        # Short paths: conmon's attach socket path must stay under the 108-byte unix socket limit.
        self.base = Path(tempfile.mkdtemp(prefix="dyb-", dir="/tmp"))
        self.extra_args = extra_args or []
        self.name = name
        self.sock = str(self.base / "d.sock")
        self.log_path = self.base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Target:
        """Seed the data root, start the daemon and wait for ``/_ping``.

        Args:
            timeout: Seconds to wait for the daemon to answer.

        Returns:
            The daemon as a benchmark target.

        Raises:
            RuntimeError: Seeding failed, or the daemon exited or did not answer in time.
        """
        root, exec_root = self.base / "root", self.base / "exec"
        seed = subprocess.run(
            [sys.executable, "-m", "dockyard.store.seed", "--data-root", str(root)],
            capture_output=True,
            timeout=300,
        )
        if seed.returncode != 0:
            raise RuntimeError(f"seeding failed: {seed.stderr.decode(errors='replace')[-800:]}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dockyard.daemon", "-H", f"unix://{self.sock}", "--data-root",
                 str(root), "--exec-root", str(exec_root), "--log-level", "warn", *self.extra_args],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockyardd exited {self.proc.returncode}: {self._log_tail()}")
            if ping(self.sock):
                return Target(self.name, self.sock, self.proc.pid)
            time.sleep(0.05)
        raise RuntimeError(f"dockyardd did not answer /_ping within {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        """Stop the daemon, kill shims and containers left under the temp dir, unmount it and delete it."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        kill_leftovers(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def kill_leftovers(base: Path) -> None:
    """Kill processes whose command line names ``base`` (conmon, containers) and unmount under it.

    Same approach as the test suite's fixture: everything the private daemon spawned carries its
    temp dir in its arguments, so nothing outside this run is touched.
    """
    marker = str(base).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(name), signal.SIGKILL)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(base))), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def reference_target(sock: str) -> Target:
    """A running reference daemon on ``sock``.

    Raises:
        RuntimeError: Nothing answers ``/_ping`` there.
    """
    if not ping(sock, 5):
        raise RuntimeError(f"no daemon answers /_ping on {sock}")
    return Target("dockerd", sock, listener_pid(sock))


def start_reference() -> tuple[Target, bool] | None:
    """Start (or reuse) the reference dockerd with the project's script; None when the script is absent.

    The script is idempotent: a reference already answering on its socket is reused (and left running,
    since someone else started it).

    Returns:
        The target and whether this call started it, or None.

    Raises:
        RuntimeError: The script failed.
    """
    if not REFERENCE_SCRIPT.exists():
        return None
    was_running = ping(REFERENCE_SOCKET)
    # Own session: a Ctrl-C on the benchmark must not reach the dockerd the script leaves running, or the
    # cleanup could not remove the containers made on it.
    script = [str(REFERENCE_SCRIPT)]
    proc = subprocess.run(
        script, capture_output=True, timeout=600, stdin=subprocess.DEVNULL, start_new_session=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{REFERENCE_SCRIPT} failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return reference_target(REFERENCE_SOCKET), not was_running


def stop_reference(target: Target, timeout: float = 30.0) -> None:
    """Stop a reference dockerd this run started (SIGTERM, then SIGKILL after ``timeout``)."""
    if target.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(target.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{target.pid}"):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(target.pid, signal.SIGKILL)
