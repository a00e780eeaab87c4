"""The archive store's pure parts and its in-root resolution on a plain directory standing in for a rootfs."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.errors import InvalidParameter
from dockyard.store import archive_out
from dockyard.store.archive_in import ExtractOptions, extract_archive
from dockyard.store.inroot import clean_abs, follow_in_scope, make_dirs, open_in_root
from tests.tar_helpers import d, f, hard, make_tar, sym


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (rootfs / "data").mkdir()
    os.symlink("/", rootfs / "escape")
    os.symlink("../../../../..", rootfs / "data" / "up")
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    yield rootfs, fd
    os.close(fd)


def test_go_file_mode_matches_gos_bits() -> None:
    assert archive_out.go_file_mode(stat.S_IFLNK | 0o777) == 134218239  # what dockerd sent for /bin/sh
    assert archive_out.go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert archive_out.go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert archive_out.go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666


def test_go_time_is_rfc3339_utc_with_trimmed_nanos() -> None:
    assert archive_out.go_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert archive_out.go_time(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/etc", "/etc"), ("etc/", "/etc/"), ("/etc/.", "/etc/."), ("//a//b/../c", "/a/c"), ("/", "/")],
)
def test_abs_path_keeps_trailing_dot_and_slash(path: str, expected: str) -> None:
    assert archive_out._abs_path(path) == expected


def test_clean_abs_has_one_leading_slash() -> None:
    assert clean_abs("//data/../x") == "/x" and clean_abs("") == "/" and clean_abs("../../a") == "/a"


def test_resolution_never_leaves_the_root(root: tuple[Path, int]) -> None:
    rootfs, fd = root
    assert follow_in_scope(fd, "/escape/etc/passwd") == "/etc/passwd"
    assert follow_in_scope(fd, "/data/up/etc") == "/etc"
    assert follow_in_scope(fd, "/data/up/nothing/here") == "/nothing/here"
    opened = open_in_root(fd, "/data/up/escape/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.fstat(opened).st_ino == (rootfs / "etc").stat().st_ino
    finally:
        os.close(opened)
    made = make_dirs(fd, "/escape/new/deeper")
    os.close(made)
    assert (rootfs / "new" / "deeper").is_dir()


def _extract(fd: int, dest: str, data: bytes, **kw: object) -> None:
    extract_archive(io.BytesIO(data), fd, dest, ExtractOptions(**kw))  # type: ignore[arg-type]


def test_members_land_inside_the_root(root: tuple[Path, int], tmp_path: Path) -> None:
    rootfs, fd = root
    _extract(fd, "/data", make_tar(f("/abs.txt", b"a"), f("up/tmp/via-up.txt", b"u"), sym("esc", "/")))
    _extract(fd, "/data", make_tar(f("esc/etc/through.txt", b"t")))
    assert (rootfs / "data" / "abs.txt").read_bytes() == b"a"
    assert (rootfs / "tmp" / "via-up.txt").read_bytes() == b"u"
    assert (rootfs / "etc" / "through.txt").read_bytes() == b"t"
    assert not (tmp_path / "tmp").exists()


@pytest.mark.parametrize(
    ("tar", "text"),
    [
        (make_tar(f("../x")), '"../x" is outside of "/data"'),
        (make_tar(sym("s", "../../etc")), 'invalid symlink "/data/s" -> "../../etc"'),
        (make_tar(hard("h", "../etc/passwd")), 'invalid hardlink "/etc/passwd" -> "../etc/passwd"'),
        (make_tar(hard("h", "/missing")), "link /data/missing /data/h: no such file or directory"),
    ],
)
def test_escapes_are_refused_with_dockerds_texts(root: tuple[Path, int], tar: bytes, text: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        _extract(root[1], "/data", tar)
    assert err.value.message == "Error processing tar file(exit status 1): " + text


def test_no_overwrite_dir_non_dir(root: tuple[Path, int]) -> None:
    rootfs, fd = root
    with pytest.raises(InvalidParameter, match="cannot overwrite directory"):
        _extract(fd, "/", make_tar(f("data")), no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidParameter, match="cannot overwrite non-directory"):
        _extract(fd, "/etc", make_tar(d("passwd")), no_overwrite_dir_non_dir=True)
    _extract(fd, "/etc", make_tar(d("passwd")))  # without the flag, replaced as dockerd does
    assert (rootfs / "etc" / "passwd").is_dir()


def test_export_walks_by_descriptor_and_keeps_links(root: tuple[Path, int]) -> None:
    rootfs, fd = root
    os.link(rootfs / "etc" / "passwd", rootfs / "etc" / "passwd-link")
    out = io.BytesIO()
    archive_out.write_export(fd, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
        assert names[:3] == ["data", "data/up", "escape"]
        assert tar.getmember("escape").linkname == "/"
        link = tar.getmember("etc/passwd-link")
        assert link.islnk() and link.linkname == "etc/passwd"
