"""Images API with the real CLI and SDK: import (+changes, gzip, hostile tars), list filters, inspect shape
against the v1.47 spec, tag, rmi, prune."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.root

SPEC = Path(__file__).resolve().parents[2] / "spec" / "docker-api-v1.47.yaml"
_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


def spec_properties(definition: str) -> dict[str, tuple[str | None, bool]]:
    """``name -> (type or $ref, nullable or omitempty)`` for a definition's top-level properties.

    A tiny YAML reader: the spec's layout is regular, so indentation is enough.
    """
    lines = SPEC.read_text().splitlines()
    start = lines.index(f"  {definition}:")
    props: dict[str, tuple[str | None, bool]] = {}
    current: str | None = None
    in_props = False
    for line in lines[start + 1 :]:
        if re.match(r"^  \S", line):
            break
        if line == "    properties:":
            in_props = True
            continue
        if re.match(r"^    \S", line):
            in_props = False
        if not in_props:
            continue
        m = re.match(r"^      (\w+):\s*$", line)
        if m:
            current = m.group(1)
            props[current] = (None, False)
            continue
        if current and re.match(r"^        x-omitempty: true", line):
            props[current] = (props[current][0], True)
        m = re.match(r'^        (type|\$ref): "?([^"]+)"?', line)
        if m and current and props[current][0] is None:
            props[current] = (m.group(2), props[current][1])
        if current and re.match(r"^        x-nullable: true", line):
            props[current] = (props[current][0], True)
    return props


def rootfs_tar(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A root filesystem with a static busybox and the given files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "cat", "sleep", "ls", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def import_image(d: Daemon, data: bytes, *args: str, check: bool = True) -> str:
    """``docker import [options] - [repo]``: the last argument is the repository unless it is an option's."""
    opts, target = list(args), []
    if opts and not opts[-1].startswith("-") and (len(opts) < 2 or opts[-2] not in ("-c", "-m")):
        target = [opts.pop()]
    proc = d.cli("import", *opts, "-", *target, input=data, check=check)
    return proc.stdout.decode().strip() if proc.returncode == 0 else proc.stderr.decode()


@pytest.fixture
def repo(unique_name: str) -> str:
    return "imgtest/" + unique_name.lower().replace("_", "-")


def test_import_with_changes_runs(daemon: Daemon, repo: str) -> None:
    data = rootfs_tar({"hello": b"imported\n"})
    image_id = import_image(
        daemon,
        data,
        "-c",
        'CMD ["/bin/busybox", "cat", "/hello"]',
        "-c",
        "ENV GREETING=hi",
        "-c",
        "LABEL stage=test",
        "-c",
        "WORKDIR /srv",
        "-m",
        "from a test",
        f"{repo}:v1",
    )
    assert image_id.startswith("sha256:")
    info = daemon.api.inspect_image(f"{repo}:v1")
    assert info["Id"] == image_id
    assert info["Config"]["Cmd"] == ["/bin/busybox", "cat", "/hello"]
    assert "GREETING=hi" in info["Config"]["Env"]
    assert info["Config"]["Labels"] == {"stage": "test"}
    assert info["Config"]["WorkingDir"] == "/srv"
    assert info["Comment"] == "from a test"
    assert info["RepoTags"] == [f"{repo}:v1"]
    assert daemon.cli("run", "--rm", f"{repo}:v1").stdout == b"imported\n"
    assert daemon.cli("run", "--rm", f"{repo}:v1", "sh", "-c", "echo $GREETING; pwd").stdout == b"hi\n/srv\n"
    daemon.cli("rmi", f"{repo}:v1")


def test_import_gzip(daemon: Daemon, repo: str) -> None:
    data = gzip.compress(rootfs_tar({"etc/zipped": b"gz\n"}))
    import_image(daemon, data, "-c", 'CMD ["cat", "/etc/zipped"]', repo)
    assert daemon.cli("run", "--rm", repo).stdout == b"gz\n"
    assert daemon.api.inspect_image(repo)["RepoTags"] == [f"{repo}:latest"]
    daemon.cli("rmi", repo)


def test_import_bad_change_is_rejected(daemon: Daemon, repo: str) -> None:
    proc = daemon.cli("import", "-c", "FROBNICATE x", "-", repo, input=rootfs_tar({}), check=False)
    assert proc.returncode != 0
    assert b"FROBNICATE" in proc.stderr.upper()
    with pytest.raises(docker.errors.ImageNotFound):
        daemon.api.inspect_image(repo)


def _escape_tars(target: Path) -> dict[str, bytes]:
    """Tars that try to write ``target`` (outside any layer) in different ways."""
    rel = "../" * 30 + str(target).lstrip("/")
    dotdot = tarfile.TarInfo(rel)
    dotdot.size = 5
    absolute = tarfile.TarInfo(str(target))
    absolute.size = 5
    link = tarfile.TarInfo("escape")
    link.type, link.linkname = tarfile.SYMTYPE, str(target.parent)
    through = tarfile.TarInfo(f"escape/{target.name}")
    through.size = 5
    rel_link = tarfile.TarInfo("up")
    rel_link.type, rel_link.linkname = tarfile.SYMTYPE, "../" * 30 + str(target.parent).lstrip("/")
    through_rel = tarfile.TarInfo(f"up/{target.name}")
    through_rel.size = 5
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../" * 30 + "etc/passwd"
    return {
        "dotdot": rootfs_tar({}, [dotdot]),
        "absolute": rootfs_tar({}, [absolute]),
        "symlink": rootfs_tar({}, [link, through]),
        "relsymlink": rootfs_tar({}, [rel_link, through_rel]),
        "hardlink": rootfs_tar({}, [hard]),
    }


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "relsymlink", "hardlink"])
def test_import_hostile_tar_never_writes_outside(
    daemon: Daemon, repo: str, tmp_path: Path, kind: str
) -> None:
    outside = Path("/tmp") / f"dy-escape-{os.urandom(4).hex()}"
    outside.mkdir()
    target = outside / "pwned"
    try:
        data = _escape_tars(target)[kind]
        proc = daemon.cli("import", "-", repo, input=data, check=False)
        assert not target.exists(), f"{kind}: the tar wrote {target}"
        assert list(outside.iterdir()) == []
        if proc.returncode == 0:
            # contained: whatever was imported stays inside the image
            daemon.cli(
                "run", "--rm", repo, "sh", "-c", f"cat {target} /escape/pwned /up/pwned 2>/dev/null; true"
            )
            assert not target.exists()
            daemon.cli("rmi", repo)
        else:
            assert b"Error response from daemon" in proc.stderr, proc.stderr
    finally:
        target.unlink(missing_ok=True)
        outside.rmdir()
    assert daemon.ping()


def test_images_list_and_filters(daemon: Daemon, repo: str) -> None:
    labelled = import_image(daemon, rootfs_tar({}), "-c", "LABEL suite=images", f"{repo}:lab")
    plain = import_image(daemon, rootfs_tar({"x": b"1"}), f"{repo}:plain")
    dangling = import_image(daemon, rootfs_tar({"y": b"2"}))
    try:
        fmt = ["--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"]
        listed = daemon.cli("images", *fmt).stdout.decode()
        assert f"{labelled} {repo}:lab" in listed and f"{plain} {repo}:plain" in listed
        assert "busybox:latest" in listed
        by_ref = daemon.cli("images", "--filter", f"reference={repo}:*", *fmt).stdout.decode().split("\n")
        assert sorted(filter(None, by_ref)) == sorted([f"{labelled} {repo}:lab", f"{plain} {repo}:plain"])
        by_label = (
            daemon.cli("images", "-q", "--no-trunc", "--filter", "label=suite=images").stdout.decode().split()
        )
        assert by_label == [labelled]
        dang = daemon.cli("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.decode().split()
        assert dangling in dang and labelled not in dang
        summary = next(i for i in daemon.api.images() if i["Id"] == labelled)
        assert summary["RepoTags"] == [f"{repo}:lab"] and summary["Labels"] == {"suite": "images"}
        assert isinstance(summary["Created"], int) and summary["Containers"] in (-1, 0)
        bad = daemon.api._get(daemon.api._url("/images/json"), params={"filters": '{"bogus":{"x":true}}'})
        assert bad.status_code == 400 and "bogus" in bad.json()["message"]
    finally:
        daemon.cli("rmi", f"{repo}:lab", f"{repo}:plain", dangling)


def _check_shape(value: dict[str, Any], definition: str) -> None:
    props = spec_properties(definition)
    assert set(value) <= set(props), f"{definition}: keys not in the spec: {set(value) - set(props)}"
    for name, (kind, nullable) in props.items():
        if name not in value:
            # omitempty in dockerd: nullable fields and nested objects ($ref) may be left out
            assert nullable or kind is None or kind.startswith("#/"), f"{definition}.{name} missing"
            continue
        if value[name] is None:
            # Go encodes nil maps and slices as null (dockerd does so for Volumes, OnBuild, Labels)
            assert nullable or kind in ("array", "object"), f"{definition}.{name} is null"
            continue
        if kind in _TYPES:
            assert isinstance(value[name], _TYPES[kind]), (
                f"{definition}.{name}: {value[name]!r} is not {kind}"
            )


def test_image_inspect_shape(daemon: Daemon) -> None:
    info = daemon.api.inspect_image("busybox")
    _check_shape(info, "ImageInspect")
    for key in (
        "Id",
        "RepoTags",
        "RepoDigests",
        "Created",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "GraphDriver",
        "RootFS",
        "Metadata",
    ):
        assert key in info
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", info["Id"])
    assert info["RepoTags"] == ["busybox:latest"]
    assert info["RootFS"]["Type"] == "layers" and all(
        x.startswith("sha256:") for x in info["RootFS"]["Layers"]
    )
    _check_shape(info["Config"], "ImageConfig")
    assert set(info["GraphDriver"]) == {"Name", "Data"}
    for summary in daemon.api.images():
        _check_shape(summary, "ImageSummary")
    cli = daemon.cli(
        "image", "inspect", "--format", "{{.Os}}/{{.Architecture}} {{index .RepoTags 0}}", "busybox"
    )
    assert cli.stdout.decode().startswith("linux/")
    missing = daemon.cli("image", "inspect", "nosuchimage:zzz", check=False)
    assert missing.returncode == 1 and b"No such image: nosuchimage:zzz" in missing.stderr


def test_tag_and_rmi_untag_vs_delete(daemon: Daemon, repo: str) -> None:
    image_id = import_image(daemon, rootfs_tar({"t": b"1"}), f"{repo}:one")
    daemon.cli("tag", f"{repo}:one", f"{repo}:two")
    daemon.cli("tag", image_id, f"{repo}-other:three")
    assert sorted(daemon.api.inspect_image(image_id)["RepoTags"]) == sorted(
        [f"{repo}:one", f"{repo}:two", f"{repo}-other:three"]
    )
    # by name: untag only, while other tags remain
    out = daemon.cli("rmi", f"{repo}:one").stdout.decode()
    assert out.strip() == f"Untagged: {repo}:one"
    assert daemon.api.inspect_image(image_id)["Id"] == image_id
    # by id while tagged in two repositories: conflict without -f
    proc = daemon.cli("rmi", image_id[7:19], check=False)
    assert proc.returncode == 1 and b"must be forced" in proc.stderr
    # last tag by name: untag and delete
    daemon.cli("rmi", f"{repo}-other:three")
    out = daemon.cli("rmi", f"{repo}:two").stdout.decode()
    assert f"Untagged: {repo}:two" in out and f"Deleted: {image_id}" in out
    with pytest.raises(docker.errors.ImageNotFound):
        daemon.api.inspect_image(image_id)
    missing = daemon.cli("rmi", f"{repo}:two", check=False)
    assert missing.returncode == 1 and b"No such image" in missing.stderr
    bad = daemon.cli("tag", "busybox", "Bad:Name!", check=False)
    assert bad.returncode != 0


def test_rmi_image_in_use(daemon: Daemon, repo: str, unique_name: str) -> None:
    image_id = import_image(daemon, rootfs_tar({}), "-c", 'CMD ["sleep", "60"]', repo)
    daemon.cli("run", "-d", "--name", unique_name, repo)
    # by id: a running container blocks even -f
    raw = daemon.api.delete(daemon.api._url("/images/{0}", image_id))
    assert raw.status_code == 409
    assert "image is being used by running container" in raw.json()["message"]
    raw = daemon.api.delete(daemon.api._url("/images/{0}", image_id), params={"force": "1"})
    assert raw.status_code == 409
    # by name without -f: 409 (docker's text)
    proc = daemon.cli("rmi", repo, check=False)
    assert proc.returncode == 1
    assert b"conflict: unable to remove repository reference" in proc.stderr
    daemon.cli("stop", "-t", "0", unique_name)
    # a stopped container is a soft conflict: refused without -f ...
    proc = daemon.cli("rmi", image_id, check=False)
    assert proc.returncode == 1 and b"image is being used by stopped container" in proc.stderr
    # ... and with -f by name dockerd untags and then deletes (the container keeps its image id)
    out = daemon.cli("rmi", "-f", repo).stdout.decode()
    assert f"Untagged: {repo}:latest" in out and f"Deleted: {image_id}" in out
    with pytest.raises(docker.errors.ImageNotFound):
        daemon.api.inspect_image(image_id)
    daemon.cli("rm", unique_name)


def test_image_prune(fresh_daemon: Daemon, repo: str, unique_name: str) -> None:
    d = fresh_daemon
    dangling = import_image(d, rootfs_tar({"d": b"1"}))
    tagged = import_image(d, rootfs_tar({"e": b"2"}), f"{repo}:keep")
    out = d.cli("image", "prune", "-f").stdout.decode()
    assert dangling in out and "Total reclaimed space" in out
    with pytest.raises(docker.errors.ImageNotFound):
        d.api.inspect_image(dangling)
    assert d.api.inspect_image(tagged)["Id"] == tagged
    d.cli("create", "--name", unique_name, "busybox", "true")
    out = d.cli("image", "prune", "-a", "-f").stdout.decode()
    assert f"untagged: {repo}:keep" in out.lower() and tagged in out
    assert "hello-world" in out
    remaining = d.cli("images", "--format", "{{.Repository}}").stdout.decode().split()
    assert remaining == ["busybox"]  # used by a container: kept
    empty = d.api.prune_images()
    assert empty["ImagesDeleted"] is None and empty["SpaceReclaimed"] == 0
