"""Authorization policy: who may call which API operation, with which request bodies (pure decisions).

The policy file is TOML (read with the standard library's ``tomllib``: no YAML parser is installed, and TOML
allows the comments a security policy needs, which JSON does not). Everything is validated at load: unknown
keys, unknown operation names, wrong types and bad modes are errors naming where they are, because a typo in a
security policy must never silently widen or narrow it. Decisions are pure: the caller hands in the identity,
the operation and the already-parsed body; body constraints live in :mod:`dockyard.security.create_rules`.

Rules are tried in file order; the first whose ``match`` fits the caller decides. See README "Authorization
policy" for the format and worked examples.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dockyard.errors import InvalidParameter
from dockyard.security.create_rules import CreateRules, check_create, check_image_pull, parse_create_rules
from dockyard.security.identity import Identity
from dockyard.security.operations import SPEC_OPERATIONS

MODES = ("enforce", "audit-only")
OWNER_LABEL = "dockyard.owner"
DEFAULT_RULE = "<default>"

# Reads of a container's files and output: a "read-only" rule must grant them explicitly ("container-data").
CONTAINER_DATA = frozenset({
    "ContainerArchive", "ContainerArchiveInfo", "ContainerExport", "ContainerLogs", "ContainerAttach",
    "ContainerAttachWebsocket", "ContainerChanges",
})  # fmt: skip
GROUPS = ("*", "read-only", "container-data")

_TOP_KEYS = {"mode", "default", "rules"}
_RULE_KEYS = {"name", "match", "allow", "deny", "own_objects_only", "create", "limits"}
_MATCH_KEYS = {"everyone", "uids", "users", "groups", "cert_cns", "cert_fingerprints"}
_LIMIT_KEYS = {"requests_per_second", "burst", "concurrent_streams"}


class PolicyError(InvalidParameter):
    """The policy file is invalid (the message names the file and the offending place)."""


@dataclass(frozen=True)
class Limits:
    """Per-identity rate limits; zero means unlimited."""

    requests_per_second: float = 0.0
    burst: int = 0
    concurrent_streams: int = 0


@dataclass(frozen=True)
class Match:
    """Which callers a rule applies to (any listed criterion suffices)."""

    everyone: bool = False
    uids: frozenset[int] = frozenset()
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    cert_cns: frozenset[str] = frozenset()
    cert_fingerprints: frozenset[str] = frozenset()

    def fits(self, who: Identity) -> bool:
        """Whether the identity is one of this rule's callers."""
        if self.everyone:
            return True
        if who.uid is not None and who.uid in self.uids:
            return True
        if who.user is not None and who.user in self.users:
            return True
        if self.groups and (who.group in self.groups or not self.groups.isdisjoint(who.groups)):
            return True
        if who.cert_cn is not None and who.cert_cn in self.cert_cns:
            return True
        fp = _norm_fingerprint(who.cert_fingerprint or "")
        return bool(fp) and fp in self.cert_fingerprints


@dataclass(frozen=True)
class Rule:
    """One rule: callers, granted operations, body constraints, isolation and limits."""

    name: str
    match: Match
    allowed: frozenset[str]
    create: CreateRules | None = None
    own_objects_only: bool = False
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Decision:
    """The outcome for one request. ``allowed`` is what happens; ``would_allow`` what the rules say."""

    allowed: bool
    would_allow: bool
    rule: str
    reason: str = ""
    owner: str | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def verdict(self) -> str:
        """``allow``, ``deny``, or ``audit-deny`` (denied by the rules, allowed by audit-only mode)."""
        if self.would_allow:
            return "allow"
        return "deny" if not self.allowed else "audit-deny"

    @cached_property
    def audit_fields(self) -> tuple[str, str, str]:
        """(verdict, rule, reason) as the audit record shows them; made once per (cached) decision."""
        return (self.verdict, self.rule, self.reason)

    @cached_property
    def plain(self) -> bool:
        """Allowed with nothing more to do: no rate limit, no confinement (most requests: one test)."""
        limited = self.limits.requests_per_second or self.limits.concurrent_streams
        return self.would_allow and not limited and self.owner is None


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy."""

    mode: str
    default_allow: bool
    rules: tuple[Rule, ...]
    source: str = ""
    # Decisions that depend on the caller and the operation only (no body, no query), per identity (one per
    # connection; identities hash by object): most requests are such reads, and deciding them again costs
    # more than the lookup. A reloaded policy is a new object with an empty cache. The security stage reads
    # it directly on its hot path (``decided[who][operation]``).
    decided: dict[Identity, dict[str, Decision]] = field(default_factory=dict, compare=False, repr=False)

    def rule_for(self, who: Identity) -> Rule | None:
        """The first rule whose match fits the caller."""
        for rule in self.rules:
            if rule.match.fits(who):
                return rule
        return None

    def decide(
        self, who: Identity, operation: str, body: Any = None, query: Mapping[str, list[str]] | None = None
    ) -> Decision:
        """Decide one request.

        Args:
            who: the caller.
            operation: the API operation, e.g. ``ContainerCreate``.
            body: the parsed JSON body for ``ContainerCreate`` (the same parse the engine uses), else None.
            query: the query parameters (``ImageCreate``'s ``fromImage`` is checked against allowed images).

        Returns:
            The decision; in audit-only mode a denial comes back with ``allowed`` True.
        """
        if body is not None or query:
            return self._decide(who, operation, body, query)
        per_caller = self.decided.get(who)
        if per_caller is None:
            if len(self.decided) >= 4096:  # identities of closed connections go in one sweep
                self.decided.clear()
            per_caller = self.decided[who] = {}
        decision = per_caller.get(operation)
        if decision is None:
            decision = per_caller[operation] = self._decide(who, operation, None, None)
        return decision

    def _decide(
        self, who: Identity, operation: str, body: Any, query: Mapping[str, list[str]] | None
    ) -> Decision:
        rule = self.rule_for(who)
        if rule is None:
            reason = "" if self.default_allow else f"no rule matches {who.describe()}"
            return self._verdict(DEFAULT_RULE, reason, None, Limits())
        owner = owner_of(who) if rule.own_objects_only else None
        reason = _check_rule(rule, operation, body, query or {})
        return self._verdict(rule.name, reason, owner, rule.limits)

    def _verdict(self, rule: str, reason: str, owner: str | None, limits: Limits) -> Decision:
        ok = not reason
        return Decision(ok or self.mode == "audit-only", ok, rule, reason, owner, limits)


def _check_rule(rule: Rule, operation: str, body: Any, query: Mapping[str, list[str]]) -> str:
    if operation not in rule.allowed:
        return f"operation {operation} is not allowed"
    if rule.create is None:
        return ""
    if operation == "ContainerCreate":
        return check_create(rule.create, body)
    if operation == "ImageCreate":
        return check_image_pull(rule.create, query)
    return ""


def owner_of(who: Identity) -> str:
    """The ``dockyard.owner`` label value of a caller: ``uid:1000`` (unix socket) or ``cn:NAME`` (TLS)."""
    if who.cert_cn is not None:
        return f"cn:{who.cert_cn}"
    if who.uid is not None:
        return f"uid:{who.uid}"
    return f"transport:{who.transport}"


def read_only_operations(methods: Mapping[str, str]) -> frozenset[str]:
    """Every GET/HEAD operation except the reads of a container's data."""
    return frozenset(op for op, m in methods.items() if m in ("GET", "HEAD") and op not in CONTAINER_DATA)


# -- loading -------------------------------------------------------------------------------------------------
def load_policy(path: Path, extra_operations: Mapping[str, str] | None = None) -> Policy:
    """Read and validate a policy file.

    Args:
        path: the TOML file.
        extra_operations: operation → method registered by the daemon's router beyond the spec's.

    Returns:
        The policy.

    Raises:
        PolicyError: the file cannot be read or is invalid (the message says where).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"policy {path}: {exc}") from None
    return parse_policy(data, str(path), extra_operations)


def parse_policy(data: Mapping[str, Any], source: str = "", extra: Mapping[str, str] | None = None) -> Policy:
    """Validate the decoded document (see :func:`load_policy`)."""
    methods = {**SPEC_OPERATIONS, **(extra or {})}
    where = source or "policy"
    _no_unknown(data, _TOP_KEYS, where)
    mode = data.get("mode", "enforce")
    if mode not in MODES:
        raise PolicyError(f"{where}: mode must be one of {', '.join(MODES)}, not {mode!r}")
    default = data.get("default", "deny")
    if default not in ("deny", "allow"):
        raise PolicyError(f"{where}: default must be 'deny' or 'allow', not {default!r}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{where}: rules must be an array of tables ([[rules]])")
    rules = tuple(_parse_rule(r, f"{where}: rules[{i}]", methods) for i, r in enumerate(raw_rules))
    names = [r.name for r in rules]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise PolicyError(f"{where}: rule name {dup!r} is used twice")
    return Policy(mode, default == "allow", rules, source)


def _parse_rule(raw: Any, where: str, methods: Mapping[str, str]) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    _no_unknown(raw, _RULE_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}: name is required (a non-empty string)")
    where = f"{where} ({name})"
    allowed = _expand(_strings(raw.get("allow", []), f"{where}: allow"), methods, f"{where}: allow")
    denied = _expand(_strings(raw.get("deny", []), f"{where}: deny"), methods, f"{where}: deny")
    if "match" not in raw:
        raise PolicyError(f"{where}: match is required (use match.everyone = true for every caller)")
    create = raw.get("create")
    if create is not None and not isinstance(create, dict):
        raise PolicyError(f"{where}: create must be a table")
    return Rule(
        name=name,
        match=_parse_match(raw["match"], f"{where}: match"),
        allowed=allowed - denied,
        create=parse_create_rules(create, f"{where}: create", PolicyError) if create is not None else None,
        own_objects_only=_bool(raw.get("own_objects_only", False), f"{where}: own_objects_only"),
        limits=_parse_limits(raw.get("limits", {}), f"{where}: limits"),
    )


def _parse_match(raw: Any, where: str) -> Match:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    _no_unknown(raw, _MATCH_KEYS, where)
    uids = raw.get("uids", [])
    if not isinstance(uids, list) or not all(isinstance(u, int) and not isinstance(u, bool) for u in uids):
        raise PolicyError(f"{where}: uids must be an array of integers")
    m = Match(
        everyone=_bool(raw.get("everyone", False), f"{where}: everyone"),
        uids=frozenset(uids),
        users=frozenset(_strings(raw.get("users", []), f"{where}: users")),
        groups=frozenset(_strings(raw.get("groups", []), f"{where}: groups")),
        cert_cns=frozenset(_strings(raw.get("cert_cns", []), f"{where}: cert_cns")),
        cert_fingerprints=frozenset(
            _norm_fingerprint(f)
            for f in _strings(raw.get("cert_fingerprints", []), f"{where}: cert_fingerprints")
        ),
    )
    if m == Match():
        raise PolicyError(
            f"{where}: matches nobody (give uids, users, groups, cert_cns, cert_fingerprints or everyone)"
        )
    return m


def _parse_limits(raw: Any, where: str) -> Limits:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    _no_unknown(raw, _LIMIT_KEYS, where)
    rps = raw.get("requests_per_second", 0)
    if isinstance(rps, bool) or not isinstance(rps, int | float) or rps < 0:
        raise PolicyError(f"{where}: requests_per_second must be a number >= 0")
    ints = {}
    for key in ("burst", "concurrent_streams"):
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(f"{where}: {key} must be an integer >= 0")
        ints[key] = value
    burst = ints["burst"] or (max(1, int(rps)) if rps else 0)
    return Limits(float(rps), burst, ints["concurrent_streams"])


def _expand(names: Iterable[str], methods: Mapping[str, str], where: str) -> frozenset[str]:
    out: set[str] = set()
    for name in names:
        if name == "*":
            out |= set(methods)
        elif name == "read-only":
            out |= read_only_operations(methods)
        elif name == "container-data":
            out |= CONTAINER_DATA
        elif name in methods:
            out.add(name)
        else:
            raise PolicyError(f"{where}: unknown operation {name!r} (groups: {', '.join(GROUPS)})")
    return frozenset(out)


def _no_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: must be an array of strings")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: must be true or false")
    return value


def _norm_fingerprint(fp: str) -> str:
    return fp.replace(":", "").lower().removeprefix("sha256")
