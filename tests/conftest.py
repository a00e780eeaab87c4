"""Shared fixtures: a real dockyardd on a temporary socket and data root, driven by the real docker CLI and
the docker SDK. Seed images (busybox, hello-world) are built once per session and copied per daemon."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
DOCKER_CLI = shutil.which("docker", path="/usr/local/bin:/usr/bin:/bin") or "docker"


class Daemon:
    """A running dockyardd for tests."""

    def __init__(self, base: Path, seed_root: Path | None, extra_args: list[str] | None = None) -> None:
        self.base = base
        self.socket = base / "d.sock"
        self.data_root = base / "root"
        self.exec_root = base / "exec"
        self.log_path = base / "daemon.log"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        if seed_root is not None and not self.data_root.exists():
            subprocess.run(["cp", "-a", str(seed_root), str(self.data_root)], check=True)
        self.host = f"unix://{self.socket}"
        self._client: docker.DockerClient | None = None

    def start(self) -> None:
        """Start and wait until ``/_ping`` answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dockyard.daemon", "-H", self.host, "--data-root", str(self.data_root),
             "--exec-root", str(self.exec_root), "--log-level", "debug", *self.extra_args],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockyardd exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"dockyardd did not answer /_ping:\n{self.log_path.read_text()}")

    def ping(self) -> bool:
        """True when the daemon answers."""
        import socket as sk

        s = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
        try:
            s.settimeout(1)
            s.connect(str(self.socket))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the daemon process (containers keep running under their shims)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def kill9(self) -> None:
        """Simulate a crash."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same data root."""
        self.stop()
        self.start()

    @property
    def client(self) -> docker.DockerClient:
        """A docker SDK client for this daemon."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=60)
        return self._client

    @property
    def api(self) -> docker.APIClient:
        """The low-level SDK client."""
        return self.client.api

    def cli(
        self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the real docker CLI against this daemon."""
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CLI_HINTS": "false"}
        env.pop("DOCKER_CONTEXT", None)
        proc = subprocess.run(
            [DOCKER_CLI, *args], input=input, capture_output=True, env=env, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
            )
        return proc

    def http(self) -> requests.Session:
        """A plain HTTP session over the unix socket (through the SDK's adapter)."""
        return self.api

    def cleanup(self) -> None:
        """Remove every container, stop the daemon, and clear shims and mounts left behind."""
        if self.proc is not None and self.ping():
            with contextlib.suppress(Exception):
                for c in self.client.containers.list(all=True):
                    with contextlib.suppress(Exception):
                        c.remove(force=True)
        self.stop()
        kill_leftovers(self.base)


def poll(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until ``check()`` holds: poll with a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_leftovers(base: Path) -> None:
    """Kill conmon/container processes whose command line names ``base`` and unmount under it."""
    marker = str(base)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    unmount_under(marker)


def unmount_under(prefix: str) -> None:
    """Lazily unmount every mount below ``prefix`` (deepest first)."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def pytest_configure(config: pytest.Config) -> None:
    """Before pytest prunes old temporary directories: drop mounts a killed earlier run left in them
    (a daemon's mount-namespace bind mount makes the directory undeletable)."""
    unmount_under(f"/tmp/pytest-of-{getpass.getuser()}/")


@pytest.fixture(scope="session")
def seed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the offline seed images, made once and copied for each daemon."""
    root = tmp_path_factory.mktemp("seed") / "root"
    subprocess.run([sys.executable, "-m", "dockyard.store.seed", "--data-root", str(root)], check=True)
    return root


def _base_dir() -> Path:
    # Short paths: conmon's attach socket path must stay under the unix socket limit.
    return Path(tempfile.mkdtemp(prefix="dy-", dir="/tmp"))


@pytest.fixture(scope="session")
def daemon(seed_root: Path) -> Iterator[Daemon]:
    """One daemon shared by the tests that do not restart it."""
    d = Daemon(_base_dir(), seed_root)
    d.start()
    yield d
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture
def fresh_daemon(seed_root: Path) -> Iterator[Daemon]:
    """A daemon of the test's own, for tests that stop, kill or restart it."""
    d = Daemon(_base_dir(), seed_root)
    d.start()
    yield d
    if d.proc is None:
        with contextlib.suppress(Exception):
            d.start()
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A container name unique to the test."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "")[:40] + "-" + os.urandom(3).hex()
