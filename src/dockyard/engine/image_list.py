"""``GET /images/json``: image summaries and their filters (before, since, dangling, label, reference, until).

Split from ``engine/images.py`` to keep each module small; the rules follow dockerd's
``daemon/images/images.go``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from dockyard.engine.filters import Filters
from dockyard.engine.image_owners import may_see
from dockyard.errors import InvalidParameter
from dockyard.store.images import ImageRecord, ImageStore
from dockyard.store.reference import parse_normalized

if TYPE_CHECKING:
    from dockyard.engine.images import ImageService

__all__ = ["ImageSummary", "list_summaries", "parse_time", "summary_created"]

_ALLOWED = {"before", "since", "dangling", "label", "label!", "reference", "until"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ImageSummary(TypedDict):
    """One entry of ``GET /images/json``."""

    Id: str
    ParentId: str
    RepoTags: list[str]
    RepoDigests: list[str]
    Created: int
    Size: int
    SharedSize: int
    Labels: dict[str, str]
    Containers: int


def parse_time(value: str) -> float:
    """Parse a filter timestamp: unix seconds, RFC 3339, or a Go duration ago (``10m``).

    Raises:
        InvalidParameter: anything else.
    """
    try:
        return float(value)
    except ValueError:
        pass
    match = _DURATION.match(value)
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise InvalidParameter(f"invalid filter 'until={value}'") from exc


def summary_created(blob: dict[str, Any]) -> float:
    """An image config's creation time in unix seconds."""
    created = str(blob.get("created") or "")
    if not created:
        return 0.0
    # Python < 3.11.? rejects nanosecond fractions: keep microseconds.
    head, dot, frac = created.rstrip("Z").partition(".")
    text = head + (dot + frac[:6] if dot else "") + "+00:00"
    return datetime.fromisoformat(text).timestamp()


def _glob(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch))
    return re.compile("^" + "".join(out) + "$")


def _reference_match(patterns: list[re.Pattern[str]], familiar: str) -> bool:
    name = parse_normalized(familiar).familiar_name
    return any(p.match(familiar) or p.match(name) for p in patterns)


def list_summaries(
    service: ImageService, store: ImageStore, filters: Filters, all_images: bool, viewer: str | None = None
) -> list[ImageSummary]:
    """Build the filtered summaries, newest first; with ``viewer`` (a confined caller), only the images and
    tags it may see (its own and unowned ones: ``engine.image_owners``).

    Raises:
        InvalidParameter: unknown filter or bad value.
        NotFound: a ``before``/``since`` image does not exist.
    """
    filters.validate(_ALLOWED)
    dangling = filters.get_bool("dangling") if filters.contains("dangling") else None
    before = [summary_created(store.config(service.resolve(r, viewer).id)) for r in filters.get("before")]
    since = [summary_created(store.config(service.resolve(r, viewer).id)) for r in filters.get("since")]
    until = [parse_time(v) for v in filters.get("until")]
    patterns = [_glob(p) for p in filters.get("reference")]
    result: list[tuple[float, ImageSummary]] = []
    for record in store.all():
        if not may_see(record, viewer):
            continue
        refs = store.references(record.id, viewer)
        tags = [parse_normalized(r).familiar() for r, digest in refs if not digest]
        digests = [parse_normalized(r).familiar() for r, digest in refs if digest]
        if dangling is not None and dangling == bool(tags):
            continue
        if not all_images and not refs and store.children(record.id):
            continue
        if patterns:
            tags = [t for t in tags if _reference_match(patterns, t)]
            if not tags:
                continue
        blob = store.config(record.id)
        created = summary_created(blob)
        labels = (blob.get("config") or {}).get("Labels") or {}
        if any(created >= b for b in before) or any(created <= s for s in since):
            continue
        if any(created > u for u in until) or not filters.match_label(labels):
            continue
        result.append((created, _summary(record, tags, digests, created, labels)))
    result.sort(key=lambda item: item[0], reverse=True)
    return [summary for _, summary in result]


def _summary(
    record: ImageRecord, tags: list[str], digests: list[str], created: float, labels: dict[str, str]
) -> ImageSummary:
    return {
        "Id": record.id,
        "ParentId": record.parent,
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": int(created),
        "Size": record.size,
        "SharedSize": -1,
        "Labels": labels,
        "Containers": -1,
    }
