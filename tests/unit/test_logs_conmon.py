"""Following a log that the real conmon writes and rotates (``--log-size-max``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dockyard.logs.follow import follow_logs
from dockyard.logs.reader import read_logs

RUNC = shutil.which("runc")
CONMON = shutil.which("conmon")
BUSYBOX = shutil.which("busybox")
SCRIPT = (
    "i=0; while [ $i -lt 400 ]; do echo line-$i; echo err-$i >&2; i=$((i+1));"
    " [ $((i % 20)) -eq 0 ] && sleep 0.02; done; printf end"
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (RUNC and CONMON and BUSYBOX), reason="needs root, runc, conmon"
    ),
]


def _bundle(root: Path) -> Path:
    bundle = root / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    assert BUSYBOX is not None and RUNC is not None
    shutil.copy(BUSYBOX, bundle / "rootfs" / "bin" / "busybox")
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/busybox", "sh", "-c", SCRIPT]
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


async def _run_container(root: Path, log: Path, cid: str) -> None:
    assert CONMON is not None and RUNC is not None
    (root / "exit").mkdir()
    (root / "sock").mkdir()
    conmon = await asyncio.create_subprocess_exec(
        CONMON, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid, "-r", RUNC, "-b", str(_bundle(root)),
        "-p", str(root / "pid"), "--exit-dir", str(root / "exit"), "--socket-dir-path", str(root / "sock"),
        "-l", f"k8s-file:{log}", "--log-size-max", "4096", "--sync",
    )  # fmt: skip
    try:
        while not (root / "pid").exists() or not (root / "pid").read_text():
            await asyncio.sleep(0.01)
        start = await asyncio.create_subprocess_exec(RUNC, "start", cid)
        assert await start.wait() == 0
        assert await asyncio.wait_for(conmon.wait(), 30) == 0
    finally:
        if conmon.returncode is None:
            conmon.kill()
            await conmon.wait()
        delete = await asyncio.create_subprocess_exec(RUNC, "delete", "-f", cid)
        await delete.wait()


def test_follow_survives_conmon_rotation(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    cid = f"dockyard-logs-test-{os.getpid()}"

    async def main() -> tuple[list[bytes], list[bytes]]:
        stopped = asyncio.Event()
        out: list[bytes] = []
        err: list[bytes] = []

        async def consume() -> None:
            async for rec in follow_logs(log, stopped=stopped):
                (out if rec.stream == 1 else err).append(rec.data)

        consumer = asyncio.ensure_future(consume())
        await _run_container(tmp_path, log, cid)
        stopped.set()
        await asyncio.wait_for(consumer, 10)
        return out, err

    out, err = asyncio.run(main())
    assert out == [f"line-{i}\n".encode() for i in range(400)] + [b"end"]
    assert err == [f"err-{i}\n".encode() for i in range(400)]
    assert log.stat().st_size <= 4096  # conmon did rotate: only the last part is left on disk
    assert read_logs(log, tail=1) == read_logs(log)[-1:]
