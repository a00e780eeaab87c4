"""Tests for image reference parsing (distribution/reference semantics)."""

from __future__ import annotations

import pytest

from dockyard.errors import InvalidParameter
from dockyard.store.reference import is_full_id, parse_normalized, parse_repo_tag

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox", "busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox", "busybox"),
        ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        ("localhost/x", "localhost/x", "localhost/x"),
        ("quay.io/org/img", "quay.io/org/img", "quay.io/org/img"),
        ("my-reg.example.com:443/a__b/c.d-e", "my-reg.example.com:443/a__b/c.d-e", None),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", None),
        ("[::1]:5000/x:y", "[::1]:5000/x:y", None),
    ],
)
def test_normalize(text: str, full: str, familiar: str | None) -> None:
    ref = parse_normalized(text)
    assert str(ref) == full
    if familiar is not None:
        assert ref.familiar() == familiar


def test_parts_and_default_tag() -> None:
    ref = parse_normalized("localhost:5000/a/b")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("localhost:5000", "a/b", None, None)
    assert ref.with_default_tag().tag == "latest"
    assert parse_normalized(f"x@{DIGEST}").with_default_tag().tag is None
    assert str(parse_normalized("x:1").repository()) == "docker.io/library/x"
    assert parse_normalized("library/busybox").familiar_name == "busybox"
    assert parse_normalized("docker.io/library/a/b").familiar_name == "library/a/b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
        ("user/App:v1", "invalid reference format: repository name (user/App) must be lowercase"),
        ("", "invalid reference format"),
        ("a:b:c", "invalid reference format"),
        ("-abc", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("a/", "invalid reference format"),
        ("a:", "invalid reference format"),
        ("x:" + "t" * 129, "invalid reference format"),
        ("a@sha256:abc", "invalid reference format"),
        ("a@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("a@sha256:" + "a" * 63, "invalid checksum digest length"),
        ("a" * 64, f"invalid repository name ({'a' * 64}), cannot specify 64-byte hexadecimal strings"),
        ("x/" + "a" * 260, "repository name must not be more than 255 characters"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_normalized(text)
    assert info.value.message == message


def test_repo_tag() -> None:
    assert str(parse_repo_tag("busybox", None)) == "docker.io/library/busybox:latest"
    assert str(parse_repo_tag("busybox:1", "")) == "docker.io/library/busybox:1"
    assert str(parse_repo_tag("busybox:1", "2")) == "docker.io/library/busybox:2"
    with pytest.raises(InvalidParameter, match="invalid tag format"):
        parse_repo_tag("busybox", "-bad")
    with pytest.raises(InvalidParameter, match="digest"):
        parse_repo_tag(f"busybox@{DIGEST}", None)


def test_full_id() -> None:
    assert is_full_id("a" * 64)
    assert is_full_id("sha256:" + "0" * 64)
    assert not is_full_id("a" * 12)
    assert not is_full_id("A" * 64)
