"""Authorization stage: ask the policy, enforce rate limits and owner isolation, refuse with 403/429/404.

Decisions are made on the complete body: the HTTP layer has read all of it before middleware runs. The
create body is parsed here with the same ``json.loads`` the engine uses and then *re-serialized* into the
request, so the engine builds the container from exactly the object that was checked (duplicate keys,
odd encodings and case variants cannot make the two disagree). Routes with a streamed body (image import)
are decided on method, path and query alone; their body is image data, not a container definition.

Owner isolation (a rule's ``own_objects_only``): every route under a container's, an exec's or an image's
URL resolves its reference among the caller's visible objects only (:class:`OwnedObjects`), so others'
objects answer exactly as missing ones, an id prefix is unique or ambiguous among the caller's own, and a
taken container name is refused without naming its holder. Lists, prunes and events of containers get a
label filter here; image lists, prunes, tags and removals are narrowed by the engine from
``req.decision.owner`` (images are shared: unowned ones stay visible to everyone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from dockyard.api.app import Route
from dockyard.api.messages import Request
from dockyard.engine.create_config import validate_name
from dockyard.engine.filters import parse_filters
from dockyard.errors import Conflict, Forbidden, InvalidParameter
from dockyard.security.policy import OWNER_LABEL, Decision, Policy, load_policy, owner_of

from .ratelimit import STREAM_OPERATIONS, RateLimiter

log = logging.getLogger("dockyard.authz")


class OwnedObjects(Protocol):
    """The engine's objects as owner isolation sees them (wired by the daemon's composition root).

    ``owner`` is the confined caller's ``dockyard.owner`` value. The resolvers raise the engine's own
    errors (``No such container: X``, ``No such image: X``, ``multiple IDs found ...``) computed over the
    objects the caller may see, and return the reference to hand the engine: the caller's text, or the
    full id when the engine's lookup over every object would land elsewhere (a prefix another owner's
    object shares, a name that is another owner's tag).
    """

    def container(self, ref: str, owner: str) -> str:
        """Resolve a container reference among ``owner``'s containers."""
        ...

    def exec(self, ref: str, owner: str) -> None:
        """Raise ``No such exec instance: X`` when the exec's container is not ``owner``'s."""
        ...

    def image(self, ref: str, owner: str) -> str:
        """Resolve an image reference among ``owner``'s and the unowned images and tags."""
        ...

    def name_holder(self, name: str) -> Mapping[str, str] | None:
        """The labels of the container named ``name`` (with its ``/``), or None when the name is free."""
        ...


_FILTERED = ("ContainerList", "ContainerPrune", "SystemEvents")  # narrowed with a label filter
_BODY_DECIDED = frozenset({"ContainerCreate", "ImageCreate"})  # decided on the body or query too
# Operations naming objects in their query: (parameter, kind). None is served yet; when one is, its
# references are confined with no change here (``docker commit``, ``docker save a b``).
_QUERY_REFS = {"ImageCommit": ("container", "container"), "ImageGetAll": ("names", "image")}


class PolicyHolder:
    """The policy in force; :meth:`reload` swaps it for the file's new content only when that is valid."""

    def __init__(self, path: Any, extra_operations: Mapping[str, str] | None = None) -> None:
        self.path = path
        self._extra = dict(extra_operations or {})
        self.policy: Policy = load_policy(path, self._extra)

    def load(self) -> Policy | None:
        """Read the file again (blocking: run it in a thread); None, logged, when it is invalid."""
        try:
            return load_policy(self.path, self._extra)
        except InvalidParameter as exc:
            log.error("policy reload failed, keeping the previous policy: %s", exc.message)
            return None

    def install(self, new: Policy) -> None:
        """Make ``new`` the policy in force (on the event loop, with the caches built on the old one)."""
        self.policy = new
        log.info("policy reloaded from %s (%d rules, mode %s)", self.path, len(new.rules), new.mode)


class AuthzMiddleware:
    """The ``Middleware`` that enforces a :class:`PolicyHolder`'s policy."""

    def __init__(
        self, holder: PolicyHolder, objects: OwnedObjects, limiter: RateLimiter | None = None
    ) -> None:
        self.holder = holder
        self.objects = objects
        self.limiter = limiter or RateLimiter()
        self.streams: dict[Request, str] = {}  # requests holding a counted stream slot

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
        decision = req.decision = self.holder.policy.decide(req.conn.identity, op)  # cached per caller
        if decision.plain:
            return
        if not decision.would_allow:
            self._refuse_or_warn(req, op, decision)
        self._limit(req, op, decision)
        if decision.owner is not None:
            self._confine(req, route, decision.owner)

    def _decide_with_body(self, req: Request, op: str) -> None:
        body = _parse_body(req) if op == "ContainerCreate" else None
        query = req.query if op == "ImageCreate" else None
        decision = req.decision = self.holder.policy.decide(req.conn.identity, op, body, query)
        if not decision.would_allow:
            self._refuse_or_warn(req, op, decision)
        self._limit(req, op, decision)
        if body is not None:
            if decision.owner is not None and isinstance(body, dict):
                self._confine_create(req, body, decision.owner)
            _stamp_create(req, body, decision.owner)

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
            self.streams[req] = key

    def after(self, req: Request, route: Route | None, status: int, nbytes: int, started: float) -> None:
        """Release the caller's stream slot."""
        if self.streams:
            key = self.streams.pop(req, None)
            if key is not None:
                self.limiter.close_stream(key)

    def _confine(self, req: Request, route: Route, owner: str) -> None:
        if route.operation in _FILTERED:
            _add_owner_filter(req, owner, self._pivot(route.operation, owner))
            return
        if route.operation in _QUERY_REFS:
            self._confine_query(req, owner, *_QUERY_REFS[route.operation])
        # By path, not by operation name: every route under a container's, an exec's or an image's URL is
        # confined (PutContainerArchive, say, is a container route whose name does not start with
        # "Container"; a future /images/{name}/history or /get needs nothing here).
        pattern, params = route.pattern, req.params
        if pattern.startswith("/containers/{id}") and "id" in params:
            params["id"] = self.objects.container(params["id"], owner)
            if route.operation == "ContainerRename":
                self._check_name(req.arg("name"), owner)
        elif pattern.startswith("/exec/{id}") and "id" in params:
            self.objects.exec(params["id"], owner)
        elif pattern.startswith("/images/{name") and "name" in params:
            params["name"] = self.objects.image(params["name"], owner)

    def _pivot(self, op: str, owner: str) -> Callable[[str], str] | None:
        """How a list's ``before``/``since`` container is resolved for the caller: among its own, so
        another's container answers "No such container" as a missing one (and orders nothing)."""
        if op != "ContainerList":
            return None
        return lambda ref: self.objects.container(ref, owner)

    def _confine_query(self, req: Request, owner: str, param: str, kind: str) -> None:
        resolve = self.objects.container if kind == "container" else self.objects.image
        values = [resolve(v, owner) if v else v for v in req.query.get(param, [])]
        pairs = [(k, v) for k, v in parse_qsl(req.query_string, keep_blank_values=True) if k != param]
        _set_query(req, pairs + [(param, v) for v in values])

    def _confine_create(self, req: Request, body: dict[str, Any], owner: str) -> None:
        """A confined caller's create: the name is global (refused when taken, without naming the holder);
        the image is looked up among those the caller may see."""
        self._check_name(req.arg("name"), owner)
        image = body.get("Image")
        if isinstance(image, str) and image:
            body["Image"] = self.objects.image(image, owner)

    def _check_name(self, name: str | None, owner: str) -> None:
        if not name:
            return
        try:
            full = validate_name(name)
        except InvalidParameter:
            return  # the engine refuses it with its own text
        holder = self.objects.name_holder(full)
        if holder is not None and holder.get(OWNER_LABEL) != owner:
            # dockerd's text names the holder's id ("... in use by container <id>"): not for another owner's.
            raise Conflict(
                f'Conflict. The container name "{full}" is already in use. '
                "You have to remove (or rename) that container to be able to reuse that name."
            )


def _parse_body(req: Request) -> Any:
    """The body as the engine will parse it (``api.params.json_body``), or None when empty."""
    if not req.body.strip():
        return None
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from None


def _stamp_create(req: Request, body: Any, owner: str | None) -> None:
    """Stamp the owner label and hand the engine the very object that was checked."""
    if not isinstance(body, dict):
        return  # the engine refuses it with the same parse
    if owner is not None:
        labels = body.get("Labels")
        labels = dict(labels) if isinstance(labels, dict) else {}
        labels[OWNER_LABEL] = owner
        body["Labels"] = labels
    req.body = json.dumps(body, separators=(",", ":")).encode()


def _add_owner_filter(req: Request, owner: str, pivot: Callable[[str], str] | None = None) -> None:
    """Narrow a list, a prune or the event stream to the caller's own containers (label filters are
    ANDed; events carry their container's and images' owner labels); ``pivot`` resolves a container
    list's ``before``/``since`` reference among the caller's own."""
    current = parse_filters(req.arg("filters"))  # the engine's own parser: same reading, same errors
    fields = {k: list(v) for k, v in current.fields.items()}
    fields["label"] = [*fields.get("label", []), f"{OWNER_LABEL}={owner}"]
    if pivot is not None:
        for key in ("before", "since"):
            if key in fields:
                fields[key] = [pivot(ref) for ref in fields[key]]
    pairs = [(k, v) for k, v in parse_qsl(req.query_string, keep_blank_values=True) if k != "filters"]
    _set_query(req, [*pairs, ("filters", json.dumps(fields))])


def _set_query(req: Request, pairs: list[tuple[str, str]]) -> None:
    req.query_string = urlencode(pairs)
    req._query = None  # the query is re-parsed from the new string
