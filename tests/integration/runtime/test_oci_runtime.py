"""The OCI runtime adapter against the real runtime and conmon (root only)."""

from __future__ import annotations

import time

import pytest

from conftest import Harness

pytestmark = pytest.mark.root


def test_echo_logs_and_exit_code(harness: Harness) -> None:
    setup = harness.setup(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
    pid = harness.run(harness.create(setup))
    assert pid > 0
    harness.run(harness.runtime.start(setup.id))
    status = harness.run(harness.runtime.wait(setup.id))
    assert status.exit_code == 3
    assert not status.oom_killed
    assert abs(status.finished_at - time.time()) < 30
    assert sorted(harness.log_lines(setup)) == [("stderr", "oops"), ("stdout", "hi")]
