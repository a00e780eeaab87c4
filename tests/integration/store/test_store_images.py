"""ImageService over real stores: import, list, inspect, tag, remove, prune."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from dockyard.engine.filters import Filters, parse_filters
from dockyard.engine.images import ImageService
from dockyard.errors import Conflict, InvalidParameter, NotFound
from dockyard.store.blobs import BlobStore
from dockyard.store.db import Database
from dockyard.store.images import ImageStore
from dockyard.store.layers import LayerStore
from tests.tar_helpers import chunks, d, f, make_tar

ROOTFS = make_tar(
    d("bin"), f("bin/sh", b"#!fake\n", mode=0o755), d("etc"), f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
)


class Users:
    def __init__(self) -> None:
        self.using: dict[str, list[tuple[str, bool]]] = {}

    def containers_using(self, image_id: str) -> list[tuple[str, bool]]:
        return self.using.get(image_id, [])


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def svc(tmp_path: Path, users: Users) -> ImageService:
    db = Database(tmp_path / "dockyard.db")
    layers = LayerStore(tmp_path, db)
    images = ImageStore(db, BlobStore(tmp_path / "blobs"))
    return ImageService(images, layers, "overlay2", users)


def imp(
    svc: ImageService,
    repo: str | None = "busybox",
    tag: str | None = None,
    data: bytes = ROOTFS,
    **kw: object,
) -> str:
    return asyncio.run(svc.import_image(chunks(data), repo, tag, **kw))  # type: ignore[arg-type]


def test_import_and_inspect(svc: ImageService) -> None:
    image_id = imp(svc, changes=['CMD ["sh"]', "LABEL a=b"], message="hello")
    info = svc.inspect("busybox")
    assert info["Id"] == image_id and image_id.startswith("sha256:")
    blob = svc._images._blobs.get(image_id)  # the id is the digest of the stored config
    assert image_id == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert info["RepoTags"] == ["busybox:latest"]
    assert info["RepoDigests"] == []
    assert info["Comment"] == "hello"
    assert info["Config"]["Cmd"] == ["sh"] and info["Config"]["Labels"] == {"a": "b"}
    assert info["Config"]["Env"] is None and info["Config"]["Hostname"] == ""
    assert info["RootFS"] == {"Type": "layers", "Layers": ["sha256:" + hashlib.sha256(ROOTFS).hexdigest()]}
    assert info["Os"] == "linux" and info["Architecture"]
    assert info["Size"] == len(b"#!fake\n") + len(b"root:x:0:0::/root:/bin/sh\n")
    assert info["GraphDriver"]["Name"] == "overlay2" and "UpperDir" in info["GraphDriver"]["Data"]
    assert info["Metadata"]["LastTagTime"].endswith("Z")
    assert info["Created"].endswith("Z")
    assert svc.image_config(image_id)["Cmd"] == ["sh"]
    assert [p.name for p in svc.layers(image_id)] == ["diff"]
    assert (svc.layers(image_id)[0] / "bin/sh").read_bytes() == b"#!fake\n"


def test_default_comment_and_no_repo(svc: ImageService) -> None:
    image_id = imp(svc, repo=None)
    info = svc.inspect(image_id)
    assert info["RepoTags"] == [] and info["Comment"] == "Imported from -"


def test_resolve_forms(svc: ImageService) -> None:
    image_id = imp(svc, "localhost:5000/a/b", "t")
    hex_id = image_id.removeprefix("sha256:")
    for ref in ["localhost:5000/a/b:t", image_id, hex_id, hex_id[:12], "sha256:" + hex_id[:12]]:
        assert svc.resolve(ref).id == image_id
    with pytest.raises(NotFound, match=r"^No such image: nonexist:latest$"):
        svc.resolve("nonexist")
    with pytest.raises(NotFound, match="No such image: localhost:5000/a/b:latest"):
        svc.resolve("localhost:5000/a/b")
    with pytest.raises(InvalidParameter, match="must be lowercase"):
        svc.resolve("Busybox")


def test_tag_and_untag_then_delete(svc: ImageService) -> None:
    image_id = imp(svc)
    svc.tag("busybox", "other/repo", "v1")
    assert svc.inspect(image_id)["RepoTags"] == ["busybox:latest", "other/repo:v1"]
    assert asyncio.run(svc.remove("other/repo:v1")) == [{"Untagged": "other/repo:v1"}]
    top = svc.layer_chain(image_id)[-1]
    result = asyncio.run(svc.remove("busybox"))
    assert result == [{"Untagged": "busybox:latest"}, {"Deleted": image_id}, {"Deleted": top.chain_id}]
    assert not svc._layers.diff_dir(top.chain_id).exists()
    with pytest.raises(NotFound):
        svc.inspect(image_id)


def test_remove_by_id_with_several_repos_needs_force(svc: ImageService) -> None:
    image_id = imp(svc)
    svc.tag(image_id, "second")
    short = image_id[7:19]
    with pytest.raises(Conflict) as info:
        asyncio.run(svc.remove(short))
    assert info.value.message == (
        f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
    )
    result = asyncio.run(svc.remove(short, force=True))
    assert {"Untagged": "busybox:latest"} in result and {"Untagged": "second:latest"} in result
    assert {"Deleted": image_id} in result


def test_remove_conflicts_with_containers(svc: ImageService, users: Users) -> None:
    image_id = imp(svc)
    short = image_id[7:19]
    users.using[image_id] = [("c" * 64, False)]
    with pytest.raises(Conflict) as info:
        asyncio.run(svc.remove("busybox"))
    assert info.value.message == (
        f'conflict: unable to remove repository reference "busybox" (must force) - container '
        f"{'c' * 12} is using its referenced image {short}"
    )
    with pytest.raises(
        Conflict, match=r"\(must be forced\) - image is being used by stopped container c{12}"
    ):
        asyncio.run(svc.remove(short))
    users.using[image_id] = [("d" * 64, True)]
    with pytest.raises(
        Conflict, match=r"\(cannot be forced\) - image is being used by running container d{12}"
    ):
        asyncio.run(svc.remove(short, force=True))
    # forcing a name untags; the image stays because a running container uses it
    assert asyncio.run(svc.remove("busybox", force=True)) == [{"Untagged": "busybox:latest"}]
    assert svc.resolve(image_id).id == image_id


def test_shared_layers_survive(svc: ImageService) -> None:
    a = imp(svc, "a", changes=['CMD ["a"]'])
    b = imp(svc, "b", changes=['CMD ["b"]'])
    assert a != b and svc.layer_chain(a) == svc.layer_chain(b)
    assert asyncio.run(svc.remove("a")) == [{"Untagged": "a:latest"}, {"Deleted": a}]
    assert svc.layers(b)[0].exists()


def test_list_and_filters(svc: ImageService) -> None:
    old = imp(svc, "old", changes=["LABEL tier=base"])
    new = imp(svc, "new", data=make_tar(f("x")), changes=["LABEL tier=app"])
    dangling = imp(svc, None, data=make_tar(f("y")))

    def ids(flt: str | None) -> list[str]:
        return [s["Id"] for s in svc.list_images(parse_filters(flt))]

    assert ids(None) == [dangling, new, old]
    summary = svc.list_images(Filters.of(reference=["new"]))[0]
    assert summary["RepoTags"] == ["new:latest"] and summary["Labels"] == {"tier": "app"}
    assert summary["Containers"] == -1 and isinstance(summary["Created"], int)
    assert ids('{"dangling":{"true":true}}') == [dangling]
    assert ids('{"dangling":["false"]}') == [new, old]
    assert ids('{"label":["tier=base"]}') == [old]
    assert ids('{"label!":["tier=base"]}') == [dangling, new]
    assert ids('{"reference":["n*"]}') == [new]
    assert ids('{"reference":["n*:latest"]}') == [new]
    assert ids('{"before":["new"]}') == [old]
    assert ids('{"since":["old"]}') == [dangling, new]
    assert ids('{"until":["1"]}') == []
    with pytest.raises(InvalidParameter, match="invalid filter 'bogus'"):
        svc.list_images(Filters.of(bogus=["1"]))
    with pytest.raises(NotFound):
        svc.list_images(Filters.of(before=["missing"]))


def test_prune(svc: ImageService, users: Users) -> None:
    kept = imp(svc, "kept")
    dangling = imp(svc, None, data=make_tar(f("y")))
    report = asyncio.run(svc.prune())
    assert {"Deleted": dangling} in (report["ImagesDeleted"] or [])
    assert report["SpaceReclaimed"] == 1
    users.using[kept] = [("c" * 64, False)]
    assert asyncio.run(svc.prune(Filters.of(dangling=["false"]))) == {
        "ImagesDeleted": None,
        "SpaceReclaimed": 0,
    }
    users.using.clear()
    report = asyncio.run(svc.prune(Filters.of(dangling=["false"])))
    assert report["ImagesDeleted"] and report["ImagesDeleted"][0] == {"Untagged": "kept:latest"}
    assert svc.list_images() == []


def test_import_rejects_bad_input(svc: ImageService) -> None:
    with pytest.raises(InvalidParameter, match="run is not a valid change command"):
        imp(svc, changes=["RUN x"])
    with pytest.raises(InvalidParameter, match="lowercase"):
        imp(svc, "Bad")
    assert svc.list_images() == []
