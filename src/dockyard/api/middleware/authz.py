"""Authorization stage: ask the policy, enforce rate limits and owner isolation, refuse with 403/429/404.

Decisions are made on the complete body: the HTTP layer has read all of it before middleware runs. The
create body is parsed here with the same ``json.loads`` the engine uses and then *re-serialized* into the
request, so the engine builds the container from exactly the object that was checked (duplicate keys,
odd encodings and case variants cannot make the two disagree). Routes with a streamed body (image import)
are decided on method, path and query alone; their body is image data, not a container definition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from dockyard.api.app import Route
from dockyard.api.messages import Request
from dockyard.engine.filters import parse_filters
from dockyard.errors import Forbidden, InvalidParameter, NotFound
from dockyard.security.policy import OWNER_LABEL, Decision, Policy, load_policy, owner_of

from .ratelimit import STREAM_OPERATIONS, RateLimiter

log = logging.getLogger("dockyard.authz")

# Labels of a container by reference; None when there is no such container.
# (kind, reference) → the labels that carry the owner, or None when no such object exists. Kinds:
# "container" (a container reference) and "exec" (an exec id: its container's labels).
LabelLookup = Callable[[str, str], Mapping[str, str] | None]
_FILTERED = ("ContainerList", "ContainerPrune")


class PolicyHolder:
    """The policy in force; :meth:`reload` swaps it for the file's new content only when that is valid."""

    def __init__(self, path: Any, extra_operations: Mapping[str, str] | None = None) -> None:
        self.path = path
        self._extra = dict(extra_operations or {})
        self.policy: Policy = load_policy(path, self._extra)

    def reload(self) -> bool:
        """Load the file again (blocking read of a small file); keep the old policy when it is invalid."""
        try:
            new = load_policy(self.path, self._extra)
        except InvalidParameter as exc:
            log.error("policy reload failed, keeping the previous policy: %s", exc.message)
            return False
        self.policy = new
        log.info("policy reloaded from %s (%d rules, mode %s)", self.path, len(new.rules), new.mode)
        return True


class AuthzMiddleware:
    """The ``Middleware`` that enforces a :class:`PolicyHolder`'s policy."""

    def __init__(self, holder: PolicyHolder, labels: LabelLookup, limiter: RateLimiter | None = None) -> None:
        self.holder = holder
        self.labels = labels
        self.limiter = limiter or RateLimiter()
        self.keep_decisions = False  # the audit stage collects them with pop_decision
        self._decisions: dict[Request, Decision] = {}
        self._streams: dict[Request, str] = {}

    def decision_of(self, req: Request) -> Decision | None:
        """The decision made for a request in progress."""
        return self._decisions.get(req)

    def pop_decision(self, req: Request) -> Decision | None:
        """The decision made for a request (removed: call once, after the request)."""
        return self._decisions.pop(req, None)

    def before(self, req: Request, route: Route | None) -> None:
        """Decide, synchronously (nothing here waits); raise Forbidden, TooManyRequests or NotFound."""
        if route is None:
            return
        op = route.operation
        body = _parse_body(req) if op == "ContainerCreate" else None
        query = req.query if op == "ImageCreate" else None
        decision = self.holder.policy.decide(req.identity, op, body, query)
        self._decisions[req] = decision
        if not decision.allowed:
            raise Forbidden(f"authorization denied by rule '{decision.rule}': {decision.reason}")
        if not decision.would_allow:
            log.warning("audit-only: would deny %s %s by rule '%s': %s", req.identity.describe(), op,
                        decision.rule, decision.reason)  # fmt: skip
        key = owner_of(req.identity)
        self.limiter.take(key, decision.limits)
        if op in STREAM_OPERATIONS and self.limiter.open_stream(key, decision.limits):
            self._streams[req] = key
        if body is not None:
            _confine_create(req, body, decision.owner)
        elif decision.owner is not None:
            self._confine(req, op, decision.owner)

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Release the caller's stream slot; forget the decision unless the audit stage wants it."""
        key = self._streams.pop(req, None)
        if key is not None:
            self.limiter.close_stream(key)
        if not self.keep_decisions:
            self._decisions.pop(req, None)

    def _confine(self, req: Request, op: str, owner: str) -> None:
        if op in _FILTERED:
            _add_owner_filter(req, owner)
            return
        ref = req.params.get("id")
        if ref is None:
            return
        if op.startswith("Container"):
            kind, absent = "container", f"No such container: {ref}"
        elif op.startswith("Exec"):
            kind, absent = "exec", f"No such exec instance: {ref}"
        else:
            return
        labels = self.labels(kind, ref)
        if labels is not None and labels.get(OWNER_LABEL) != owner:
            raise NotFound(absent)  # others' objects look absent


def _parse_body(req: Request) -> Any:
    """The body as the engine will parse it (``api.params.json_body``), or None when empty."""
    if not req.body.strip():
        return None
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from None


def _confine_create(req: Request, body: Any, owner: str | None) -> None:
    """Stamp the owner label and hand the engine the very object that was checked."""
    if not isinstance(body, dict):
        return  # the engine refuses it with the same parse
    if owner is not None:
        labels = body.get("Labels")
        labels = dict(labels) if isinstance(labels, dict) else {}
        labels[OWNER_LABEL] = owner
        body["Labels"] = labels
    req.body = json.dumps(body, separators=(",", ":")).encode()


def _add_owner_filter(req: Request, owner: str) -> None:
    """Narrow a list or prune to the caller's own containers (label filters are ANDed)."""
    current = parse_filters(req.arg("filters"))  # the engine's own parser: same reading, same errors
    fields = {k: list(v) for k, v in current.fields.items()}
    fields["label"] = [*fields.get("label", []), f"{OWNER_LABEL}={owner}"]
    pairs = [(k, v) for k, v in parse_qsl(req.query_string, keep_blank_values=True) if k != "filters"]
    pairs.append(("filters", json.dumps(fields)))
    req.query_string = urlencode(pairs)
    req._query = None  # the query is re-parsed from the new string
