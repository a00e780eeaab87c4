"""Container root filesystems: overlay2 over the image's layers, or a ``vfs`` copy as fallback.

overlay2 layout (under the data root)::

    l/<short>                  -> ../layers/<chain>/diff     (short names keep mount options short)
    containers-rootfs/<cid>/{upper,work,merged}

The mount option string is limited to one page; with 26-char links and ``mount`` run with its working
directory at the data root (a subprocess, so the daemon's own cwd never changes), even 120+ layers fit,
as with Docker's ``l/`` directory. ``vfs`` copies the layers (``cp -a``, then applies whiteouts) and is
chosen when a trial overlay mount fails at start (e.g. a data root on overlayfs or tmpfs without xattrs).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from dockyard.errors import SystemFailure
from dockyard.store.syscalls import mount_overlay, unmount

__all__ = ["Rootfs", "detect_driver"]

_OPAQUE_XATTR = "trusted.overlay.opaque"


async def _run(*argv: str, cwd: Path | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemFailure(f"{argv[0]} failed: {err.decode(errors='replace').strip()}")


async def detect_driver(root: Path) -> str:
    """Return ``"overlay2"`` when an overlay mount works under ``root``, else ``"vfs"``."""
    probe = root / "tmp" / "overlay-probe"
    dirs = [probe / d for d in ("lower", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    lower, upper, work, merged = dirs
    try:
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        await _run("mount", "-t", "overlay", "overlay", "-o", opts, str(merged))
        await _run("umount", str(merged))
        return "overlay2"
    except SystemFailure:
        return "vfs"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _short_name(diff: Path) -> str:
    digest = hashlib.sha256(str(diff).encode()).digest()
    return base64.b32encode(digest).decode()[:26]


class Rootfs:
    """Creates, mounts and removes container root filesystems with one storage driver."""

    def __init__(self, root: Path, driver: str) -> None:
        """Use the data root ``root`` and ``driver`` (``overlay2`` or ``vfs``)."""
        if driver not in ("overlay2", "vfs"):
            raise SystemFailure(f"unknown storage driver {driver!r}")
        self.driver = driver
        self._root = root
        self._dir = root / "containers-rootfs"
        self._links = root / "l"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._links.mkdir(parents=True, exist_ok=True)
        # Readers of a container's files besides the container itself (archive, export): while a container
        # has one, the unmount of its exit leaves the filesystem mounted (see unmount).
        self._held: dict[str, int] = {}

    def hold(self, container_id: str) -> None:
        """Count one more reader of the container's filesystem (call before mounting it for the reader)."""
        self._held[container_id] = self._held.get(container_id, 0) + 1

    def let_go(self, container_id: str) -> int:
        """Count one reader less; how many are left."""
        left = self._held.pop(container_id, 1) - 1
        if left > 0:
            self._held[container_id] = left
        return left

    def path(self, container_id: str) -> Path:
        """Where the container's root filesystem appears."""
        leaf = "merged" if self.driver == "overlay2" else "rootfs"
        return self._dir / container_id / leaf

    def graph_driver(self, container_id: str, lower_dirs: list[Path]) -> dict[str, str]:
        """The ``GraphDriver.Data`` Docker reports for a container."""
        if self.driver == "vfs":
            return {}
        base = self._dir / container_id
        lowers = ":".join(str(p) for p in reversed(lower_dirs))
        return {
            "LowerDir": lowers,
            "MergedDir": str(base / "merged"),
            "UpperDir": str(base / "upper"),
            "WorkDir": str(base / "work"),
        }

    async def mount_rootfs(self, container_id: str, lower_dirs: list[Path]) -> Path:
        """Prepare and mount the root filesystem; a no-op when it is already mounted.

        Args:
            container_id: the container.
            lower_dirs: the image's layer diff directories, base first.

        Returns:
            The root filesystem path.
        """
        target = self.path(container_id)
        if self.driver == "vfs":
            if not target.exists():
                await asyncio.to_thread(_vfs_build, target, lower_dirs)
            return target
        if os.path.ismount(target):
            return target
        base = self._dir / container_id
        for sub in ("upper", "work", "merged"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        lowers = [self._link(p) for p in reversed(lower_dirs)] or [self._empty_lower(base)]
        opts = f"lowerdir={':'.join(lowers)},upperdir={base / 'upper'},workdir={base / 'work'}"
        mount_overlay(target, opts, cwd=self._root)
        return target

    def _link(self, diff: Path) -> str:
        name = _short_name(diff)
        link = self._links / name
        if not link.is_symlink():
            tmp = self._links / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.path.relpath(diff, self._links))
            tmp.rename(link)
        return f"l/{name}"

    def _empty_lower(self, base: Path) -> str:
        (base / "empty").mkdir(exist_ok=True)
        return str(base / "empty")

    async def unmount(self, container_id: str, unless_held: bool = False) -> None:
        """Unmount the root filesystem (lazily if busy); a no-op when not mounted, and with
        ``unless_held`` while it has a reader (:meth:`hold`): the reader unmounts when it lets go.

        The check and the unmount run without a suspension point in between, so a reader that holds the
        filesystem before mounting it never finds it unmounted under it.
        """
        if unless_held and self._held.get(container_id):
            return
        target = self.path(container_id)
        if self.driver == "overlay2":
            unmount(target)

    async def remove(self, container_id: str) -> None:
        """Unmount and delete the container's filesystem, including its writable layer."""
        await self.unmount(container_id)
        await asyncio.to_thread(shutil.rmtree, self._dir / container_id, True)

    async def rw_size(self, container_id: str) -> int:
        """Bytes in the container's writable layer (``SizeRw``)."""
        top = self._dir / container_id / ("upper" if self.driver == "overlay2" else "rootfs")
        return await asyncio.to_thread(dir_size, top)


def dir_size(path: Path) -> int:
    """Sum of the sizes of regular files under ``path``, hardlinks counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _vfs_build(target: Path, lower_dirs: list[Path]) -> None:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for diff in lower_dirs:
        whiteouts = _apply_whiteouts(diff, staging)
        _cp(diff, staging)
        for rel in whiteouts:
            (staging / rel).unlink(missing_ok=True)
    staging.rename(target)


def _apply_whiteouts(diff: Path, dest: Path) -> list[str]:
    """Delete in ``dest`` what ``diff``'s whiteouts hide; return the whiteout paths to drop after copying."""
    found: list[str] = []
    for dirpath, dirs, files in os.walk(diff):
        rel_dir = os.path.relpath(dirpath, diff)
        if rel_dir != "." and _is_opaque(dirpath):
            _clear(dest / rel_dir)
        for name in files + dirs:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                _delete(dest / rel)
                found.append(rel)
    return found


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _delete(child)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _cp(src: Path, dest: Path) -> None:
    result = subprocess.run(["cp", "-a", f"{src}/.", f"{dest}/"], capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemFailure(f"copying layer {src} failed: {result.stderr.decode(errors='replace')}")
