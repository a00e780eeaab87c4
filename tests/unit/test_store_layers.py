"""Tests for layer import: safe extraction, compression, whiteouts, blobs."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.errors import InvalidParameter, NotFound
from dockyard.store.blobs import BlobStore, sha256_digest
from dockyard.store.db import Database
from dockyard.store.layers import LayerStore, chain_id
from tests.tar_helpers import Member, d, f, hard, imp, make_tar, member_info, sym


@pytest.fixture
def store(tmp_path: Path) -> LayerStore:
    return LayerStore(tmp_path / "root", Database(tmp_path / "root" / "d.db"))


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress])
def test_import_computes_diff_id(store: LayerStore, compress: Callable[[bytes], bytes]) -> None:
    raw = make_tar(
        d("etc"), f("etc/hello", b"hi\n", mode=0o4711, uid=123, gid=45), sym("bin/sh", "/bin/busybox")
    )
    layer = imp(store, compress(raw))
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.chain_id == layer.diff_id and layer.parent is None and layer.size == 3
    root = store.diff_dir(layer.chain_id)
    st = os.lstat(root / "etc/hello")
    assert (root / "etc/hello").read_bytes() == b"hi\n"
    assert stat.S_IMODE(st.st_mode) == 0o4711
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (123, 45)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert store.get(layer.chain_id) == layer


def test_same_content_is_deduplicated_and_chained(store: LayerStore) -> None:
    base = imp(store, make_tar(f("a")))
    assert imp(store, make_tar(f("a"))) == base
    top = imp(store, make_tar(f("b")), base.chain_id)
    assert top.chain_id == chain_id(base.chain_id, top.diff_id) != top.diff_id
    assert [x.chain_id for x in store.chain(top.chain_id)] == [base.chain_id, top.chain_id]
    assert store.children(base.chain_id) == [top.chain_id]
    asyncio.run(store.remove(top.chain_id))
    assert not store.diff_dir(top.chain_id).exists()
    with pytest.raises(NotFound):
        store.get(top.chain_id)


@pytest.mark.parametrize(
    "members",
    [
        [f("../escape")],
        [f("a/../../escape")],
        [sym("link", "/tmp"), f("link/escape")],
        [sym("link", "../../.."), f("link/escape")],
        [d("x"), sym("x/y", "/"), f("x/y/escape")],
        [hard("passwd", "/etc/passwd")],
        [hard("up", "../../escape")],
    ],
)
def test_malicious_tars_are_refused(store: LayerStore, tmp_path: Path, members: list[Member]) -> None:
    with pytest.raises(InvalidParameter):
        imp(store, make_tar(*members))
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "root" / "escape").exists()
    assert not Path("/tmp/escape").exists()
    assert list((tmp_path / "root" / "tmp").iterdir()) == []


def test_absolute_names_are_rooted_in_layer(store: LayerStore) -> None:
    layer = imp(store, make_tar(f("/abs/file", b"1"), f("./rel", b"2")))
    root = store.diff_dir(layer.chain_id)
    assert (root / "abs/file").read_bytes() == b"1"
    assert (root / "rel").read_bytes() == b"2"


def test_hardlink_inside_layer(store: LayerStore) -> None:
    layer = imp(store, make_tar(f("a", b"data"), hard("b", "a"), hard("c", "/a")))
    root = store.diff_dir(layer.chain_id)
    assert os.stat(root / "a").st_ino == os.stat(root / "b").st_ino == os.stat(root / "c").st_ino


def test_later_member_replaces_earlier(store: LayerStore) -> None:
    layer = imp(store, make_tar(sym("a", "/etc/passwd"), f("a", b"new"), d("b"), f("b/x"), f("b", b"file")))
    root = store.diff_dir(layer.chain_id)
    assert (root / "a").read_bytes() == b"new" and not (root / "a").is_symlink()
    assert (root / "b").read_bytes() == b"file"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_whiteouts_become_overlay_whiteouts(store: LayerStore) -> None:
    layer = imp(store, make_tar(d("gone"), f(".wh.file"), d("opq"), f("opq/.wh..wh..opq", b"")))
    root = store.diff_dir(layer.chain_id)
    st = os.lstat(root / "file")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(root / "opq", "trusted.overlay.opaque") == b"y"
    assert not (root / ".wh.file").exists()
    assert not (root / "opq/.wh..wh..opq").exists()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_device_nodes_and_fifos(store: LayerStore) -> None:
    dev = member_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    layer = imp(store, make_tar((dev, None), (member_info("fifo", tarfile.FIFOTYPE), None)))
    root = store.diff_dir(layer.chain_id)
    st = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)


def test_garbage_is_invalid(store: LayerStore) -> None:
    with pytest.raises(InvalidParameter):
        imp(store, gzip.compress(b"not a tar" * 100))


def test_many_files_stream(store: LayerStore) -> None:
    layer = imp(store, make_tar(*[f(f"d/{i}", b"") for i in range(3000)]))
    assert len(os.listdir(store.diff_dir(layer.chain_id) / "d")) == 3000


def test_blob_store(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put(b"{}")
    assert digest == sha256_digest(b"{}") and blobs.exists(digest)
    assert blobs.get(digest) == b"{}"
    assert blobs.put(b"{}", expected=digest) == digest
    with pytest.raises(InvalidParameter, match="mismatch"):
        blobs.put(b"x", expected=digest)
    blobs.path(digest).write_bytes(b"tampered")
    with pytest.raises(InvalidParameter, match="corrupt"):
        blobs.get(digest)
    blobs.delete(digest)
    with pytest.raises(NotFound):
        blobs.get(digest)
    with pytest.raises(InvalidParameter):
        blobs.path("sha256:../../x")
    assert [p.name for p in (tmp_path / "blobs" / "sha256").iterdir()] == []


def test_empty_stream_is_empty_layer(store: LayerStore) -> None:
    layer = imp(store, b"")
    assert layer.diff_id == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert layer.size == 0 and store.diff_dir(layer.chain_id).is_dir()
