"""Docker image references: parsing and normalization.

Follows the grammar of distribution/reference (the Go library dockerd uses) and its "normalized"
layer: ``busybox`` means ``docker.io/library/busybox``, ``RepoTags`` show the familiar form. No PyPI
package implements this grammar faithfully (docker-py's ``parse_repository_tag`` only splits strings),
so it lives here, small and table-tested. Error texts follow the Go library's because the CLI prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from dockyard.errors import InvalidParameter

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "Reference",
    "is_full_id",
    "parse_normalized",
    "parse_repo_tag",
]

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
_NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_FULL_ID_RE = re.compile(r"^[a-f0-9]{64}$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def is_full_id(text: str) -> bool:
    """Whether ``text`` is a 64-hex image id (optionally prefixed by ``sha256:``)."""
    return bool(_FULL_ID_RE.match(text.removeprefix("sha256:")))


@dataclass(frozen=True)
class Reference:
    """A normalized reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully qualified repository, ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as users write it, ``busybox`` or ``localhost:5000/a/b``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path.removeprefix(_OFFICIAL_PREFIX)
        return rest if "/" not in rest else self.path

    def __str__(self) -> str:
        return self._render(self.name)

    def familiar(self) -> str:
        """The familiar string, ``busybox:latest``, as ``RepoTags`` show it."""
        return self._render(self.familiar_name)

    def _render(self, name: str) -> str:
        text = name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    def with_default_tag(self) -> Reference:
        """The reference with ``latest`` added when it has neither tag nor digest."""
        if self.tag is None and self.digest is None:
            return replace(self, tag=DEFAULT_TAG)
        return self

    def repository(self) -> Reference:
        """The bare repository (no tag, no digest)."""
        return Reference(self.domain, self.path)


def _split_domain(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    is_domain = first == "localhost" or any(c in first for c in ".:") or first.lower() != first
    if not sep or not is_domain:
        domain, remainder = DEFAULT_DOMAIN, text
    else:
        domain, remainder = first, rest
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = _OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_normalized(text: str) -> Reference:
    """Parse a user-supplied reference into its normalized form (no default tag added).

    Args:
        text: ``busybox``, ``busybox:1.36``, ``localhost:5000/a/b:t``, ``x@sha256:...``.

    Returns:
        The reference.

    Raises:
        InvalidParameter: with distribution/reference's message for a malformed reference.
    """
    if _FULL_ID_RE.match(text):
        raise InvalidParameter(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidParameter(f"invalid reference format: repository name ({remote}) must be lowercase")
    return _parse_full(f"{domain}/{remainder}")


def _parse_full(text: str) -> Reference:
    match = _REFERENCE_RE.match(text)
    if match is None:
        raise InvalidParameter("invalid reference format")
    name, tag, digest = match.group(1), match.group(2), match.group(3)
    if len(name) > _NAME_MAX:
        raise InvalidParameter("repository name must not be more than 255 characters")
    if digest is not None:
        _check_digest(digest)
    domain, _, path = name.partition("/")
    return Reference(domain, path, tag, digest)


def _check_digest(digest: str) -> None:
    algorithm = digest.split(":", 1)[0]
    if algorithm != "sha256":
        raise InvalidParameter("unsupported digest algorithm")
    if not _SHA256_RE.match(digest):
        raise InvalidParameter("invalid checksum digest length")


def parse_repo_tag(repo: str, tag: str | None) -> Reference:
    """Parse the ``repo`` and ``tag`` query parameters of tag, commit and import.

    A tag embedded in ``repo`` is used when ``tag`` is empty; the result always has a tag.

    Args:
        repo: repository, possibly with ``:tag``.
        tag: separate tag, or ``None``/empty.

    Returns:
        The tagged reference.

    Raises:
        InvalidParameter: malformed repository or tag, or a digest where a tag is needed.
    """
    ref = parse_normalized(repo)
    if ref.digest is not None:
        raise InvalidParameter("cannot import digest reference")
    if tag:
        if not _TAG_RE.match(tag):
            raise InvalidParameter("invalid tag format")
        ref = replace(ref, tag=tag)
    return ref.with_default_tag()
