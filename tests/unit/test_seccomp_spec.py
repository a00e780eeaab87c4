"""The spec builder's host-facing hardening helpers: the daemon's capabilities and the host's devices."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dockyard.engine.ocispec import ALL_CAPS
from dockyard.engine.spec_builder import held_capabilities, host_devices


def test_all_caps_are_in_kernel_order() -> None:
    assert ALL_CAPS[0] == "CAP_CHOWN"
    assert ALL_CAPS[21] == "CAP_SYS_ADMIN"
    assert ALL_CAPS[24] == "CAP_SYS_RESOURCE"
    assert ALL_CAPS[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(ALL_CAPS) == 41


def test_held_capabilities_reads_the_bounding_mask(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000000001\nCapBnd:\t000001fffeffffff\n")
    held = held_capabilities(status)
    assert "CAP_SYS_RESOURCE" not in held
    assert held == [c for c in ALL_CAPS if c != "CAP_SYS_RESOURCE"]
    status.write_text("CapBnd:\t00000000a80425fb\n")
    assert held_capabilities(status) == [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD",
        "CAP_AUDIT_WRITE", "CAP_SETFCAP",
    ]  # fmt: skip


def test_held_capabilities_of_this_process_match_the_kernel_mask() -> None:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapBnd:"))
    mask = sum(1 << ALL_CAPS.index(c) for c in held_capabilities())
    assert mask == int(line.split()[1], 16) & ((1 << len(ALL_CAPS)) - 1)


@pytest.mark.root
def test_host_devices_lists_char_and_block_nodes_and_skips_pts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    (tmp_path / "pts").mkdir()
    (tmp_path / "sub").mkdir()
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(tmp_path / "sub" / "loop9", 0o600 | stat.S_IFBLK, os.makedev(7, 9))
    os.mknod(tmp_path / "pts" / "0", 0o620 | stat.S_IFCHR, os.makedev(136, 0))
    os.mknod(tmp_path / "console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.chmod(tmp_path / "null", 0o666)  # mknod applies the umask
    (tmp_path / "plain").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "null")
    assert host_devices(tmp_path) == [
        {"path": str(tmp_path / "null"), "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
         "uid": 0, "gid": 0},
        {"path": str(tmp_path / "sub" / "loop9"), "type": "b", "major": 7, "minor": 9, "fileMode": 0o600,
         "uid": 0, "gid": 0},
    ]  # fmt: skip
