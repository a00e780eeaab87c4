"""Owner isolation over images: who may see an image or a reference, and who may change one.

A confined caller (``viewer``: its ``dockyard.owner`` value) sees the images and references it created and
the unowned ones (seeded base images, those made by unconfined callers: it must be able to run them). It may
move or remove only what it created: a shared tag such as ``busybox:latest`` is read-only to it, or one user
could swap the base image under everybody. ``viewer=None`` is an unconfined caller, who sees and may change
everything.
"""

from __future__ import annotations

from collections.abc import Mapping

from dockyard.errors import Forbidden
from dockyard.security.policy import OWNER_LABEL
from dockyard.store.images import ImageRecord

__all__ = ["check_may_change", "event_labels", "may_see", "may_see_ref"]


def may_see(record: ImageRecord, viewer: str | None) -> bool:
    """Whether ``viewer`` sees the image: unconfined, its own, or unowned."""
    return may_see_ref(record.owner, viewer)


def may_see_ref(ref_owner: str | None, viewer: str | None) -> bool:
    """Whether ``viewer`` sees a reference owned by ``ref_owner`` (its image must be visible too)."""
    return viewer is None or ref_owner is None or ref_owner == viewer


def check_may_change(owner: str | None, caller: str | None, action: str, what: str) -> None:
    """Refuse a confined caller changing an image or tag it did not create.

    Both shared (unowned) and other owners' objects get the same text, so the refusal tells nothing the
    caller could not see anyway.

    Raises:
        Forbidden: ``caller`` is confined and not ``owner``.
    """
    if caller is not None and owner != caller:
        raise Forbidden(f"cannot {action} {what}: it was not created by the caller (owner isolation)")


def event_labels(labels: Mapping[str, str] | None, owner: str | None) -> dict[str, str]:
    """An image event's label attributes: the config's, with ``dockyard.owner`` taken from the image's
    recorded owner only (a label baked into the config must not route events to someone else)."""
    out = {k: v for k, v in (labels or {}).items() if k != OWNER_LABEL}
    if owner is not None:
        out[OWNER_LABEL] = owner
    return out
