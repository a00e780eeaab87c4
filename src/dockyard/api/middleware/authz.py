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
from dockyard.security.identity import Identity
from dockyard.security.policy import OWNER_LABEL, Decision, Policy, load_policy, owner_of

from .ratelimit import STREAM_OPERATIONS, RateLimiter

log = logging.getLogger("dockyard.authz")

# Labels of a container by reference; None when there is no such container.
# (kind, reference) → the labels that carry the owner, or None when no such object exists. Kinds:
# "container" (a container reference) and "exec" (an exec id: its container's labels).
LabelLookup = Callable[[str, str], Mapping[str, str] | None]
_FILTERED = ("ContainerList", "ContainerPrune", "SystemEvents")  # narrowed with a label filter
_BODY_DECIDED = frozenset({"ContainerCreate", "ImageCreate"})  # decided on the body or query too


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
        self._streams: dict[Request, str] = {}
        # Decisions that need only the caller and the operation, per identity (one per connection), for
        # the policy they came from: most requests are answered from here with two dictionary lookups.
        self._decided: dict[Identity, dict[str, Decision]] = {}
        self._decided_by: Policy | None = None

    def before(self, req: Request, route: Route | None) -> None:
        """Decide, synchronously (nothing here waits); raise Forbidden, TooManyRequests or NotFound.

        The decision is kept on the request for the audit record. This runs for every request, so the
        common case (a cached decision, no limits, no confinement) is kept to a few lookups.
        """
        if route is None:
            return
        op = route.operation
        if op in _BODY_DECIDED:
            self._decide_with_body(req, op)
            return
        who = req.conn.identity
        per_caller = self._decided.get(who)
        decision = per_caller.get(op) if per_caller is not None else None
        if decision is None or self._decided_by is not self.holder.policy:
            decision = self._decide(who, op)
        req.decision = decision
        if decision.plain:
            return
        if not decision.would_allow:
            self._refuse_or_warn(req, op, decision)
        self._limit(req, op, decision)
        if decision.owner is not None:
            self._confine(req, route, decision.owner)

    def _decide(self, who: Identity, op: str) -> Decision:
        policy = self.holder.policy
        if self._decided_by is not policy or len(self._decided) >= 4096:
            self._decided, self._decided_by = {}, policy  # reloaded (or many callers): start over
        decision = policy.decide(who, op)
        self._decided.setdefault(who, {})[op] = decision
        return decision

    def _decide_with_body(self, req: Request, op: str) -> None:
        body = _parse_body(req) if op == "ContainerCreate" else None
        query = req.query if op == "ImageCreate" else None
        decision = req.decision = self.holder.policy.decide(req.conn.identity, op, body, query)
        if not decision.would_allow:
            self._refuse_or_warn(req, op, decision)
        self._limit(req, op, decision)
        if body is not None:
            _confine_create(req, body, decision.owner)

    def _refuse_or_warn(self, req: Request, op: str, decision: Decision) -> None:
        if not decision.allowed:
            raise Forbidden(f"authorization denied by rule '{decision.rule}': {decision.reason}")
        log.warning("audit-only: would deny %s %s by rule '%s': %s", req.conn.identity.describe(), op,
                    decision.rule, decision.reason)  # fmt: skip

    def _limit(self, req: Request, op: str, decision: Decision) -> None:
        limits = decision.limits
        if not (limits.requests_per_second or limits.concurrent_streams):
            return
        key = owner_of(req.conn.identity)
        self.limiter.take(key, limits)
        if op in STREAM_OPERATIONS and self.limiter.open_stream(key, limits):
            self._streams[req] = key

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Release the caller's stream slot."""
        if self._streams:
            key = self._streams.pop(req, None)
            if key is not None:
                self.limiter.close_stream(key)

    def _confine(self, req: Request, route: Route, owner: str) -> None:
        if route.operation in _FILTERED:
            _add_owner_filter(req, owner)
            return
        ref = req.params.get("id")
        if ref is None:
            return
        # By path, not by operation name: every route under a container's or an exec's URL is confined
        # (PutContainerArchive, say, is a container route whose name does not start with "Container").
        if route.pattern.startswith("/containers/{id}"):
            kind, absent = "container", f"No such container: {ref}"
        elif route.pattern.startswith("/exec/{id}"):
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
    """Narrow a list, a prune or the event stream to the caller's own containers (label filters are
    ANDed; events carry their container's labels)."""
    current = parse_filters(req.arg("filters"))  # the engine's own parser: same reading, same errors
    fields = {k: list(v) for k, v in current.fields.items()}
    fields["label"] = [*fields.get("label", []), f"{OWNER_LABEL}={owner}"]
    pairs = [(k, v) for k, v in parse_qsl(req.query_string, keep_blank_values=True) if k != "filters"]
    pairs.append(("filters", json.dumps(fields)))
    req.query_string = urlencode(pairs)
    req._query = None  # the query is re-parsed from the new string
