"""Docker's filter grammar (the ``filters`` query parameter of list and prune endpoints).

Clients send a JSON map of sets, ``{"status": {"exited": true}}``; old clients (and docker-py) send a
map of lists, ``{"status": ["exited"]}``. Both parse into one immutable ``Filters``. Error texts follow
moby's ``api/types/filters`` because clients show them verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dockyard.errors import InvalidParameter

__all__ = ["Filters", "invalid_filter", "parse_filters"]


def invalid_filter(key: str = "", values: list[str] | None = None) -> InvalidParameter:
    """Build moby's ``invalid filter`` error.

    Args:
        key: the filter name; empty for a filter string that did not parse.
        values: the offending values, shown as Go prints a slice (``[a b]``).

    Returns:
        The error to raise.
    """
    msg = "invalid filter"
    if key:
        msg += f" '{key}"
        if values is not None:
            msg += "=[" + " ".join(values) + "]"
        msg += "'"
    return InvalidParameter(msg)


def _freeze(raw: Mapping[str, Any]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({k: tuple(v) for k, v in raw.items()})


@dataclass(frozen=True)
class Filters:
    """A parsed filter set: each key maps to a set of values (kept in arrival order)."""

    fields: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _freeze({}))

    @classmethod
    def of(cls, **values: list[str]) -> Filters:
        """Build filters from keyword lists (for the engine's own callers and tests).

        Args:
            **values: filter name to its values; names with dashes cannot be passed this way.

        Returns:
            The filters.
        """
        return cls(_freeze({k: list(dict.fromkeys(v)) for k, v in values.items()}))

    def __bool__(self) -> bool:
        return bool(self.fields)

    def keys(self) -> list[str]:
        """Names of the filters present."""
        return list(self.fields)

    def contains(self, key: str) -> bool:
        """Whether filter ``key`` was given (even with no value)."""
        return key in self.fields

    def get(self, key: str) -> list[str]:
        """Values of filter ``key``; empty when absent."""
        return list(self.fields.get(key, ()))

    def validate(self, allowed: set[str]) -> None:
        """Reject filter names outside ``allowed``.

        Raises:
            InvalidParameter: ``invalid filter 'x'`` for the first unknown name.
        """
        for name in self.fields:
            if name not in allowed:
                raise invalid_filter(name)

    def get_bool(self, key: str, default: bool = False) -> bool:
        """Read a boolean filter (``dangling=true|false|1|0``).

        Raises:
            InvalidParameter: when the values are empty, not boolean, or conflicting.
        """
        if key not in self.fields:
            return default
        values = set(self.fields[key])
        if not values:
            raise invalid_filter(key)
        is_false = bool(values & {"0", "false"})
        is_true = bool(values & {"1", "true"})
        if is_false == is_true:
            raise invalid_filter(key, self.get(key))
        return is_true

    def exact_match(self, key: str, source: str) -> bool:
        """True when ``key`` is absent or one of its values equals ``source``."""
        values = self.fields.get(key)
        return not values or source in values

    def fuzzy_match(self, key: str, source: str) -> bool:
        """True when ``key`` is absent or one of its values is a prefix of ``source``."""
        values = self.fields.get(key)
        return not values or any(source.startswith(v) for v in values)

    def match(self, key: str, source: str) -> bool:
        """True when ``key`` is absent or a value equals or regex-matches ``source`` (names)."""
        values = self.fields.get(key)
        if not values or source in values:
            return True
        for pattern in values:
            try:
                if re.search(pattern, source):
                    return True
            except re.error:
                continue
        return False

    def match_label(self, labels: Mapping[str, str], key: str = "label") -> bool:
        """Match ``label`` (all must hold) and ``label!`` (none may hold) filters.

        Each value is ``name`` (label present) or ``name=value`` (label has that value).

        Args:
            labels: the object's labels.
            key: the positive filter name; ``<key>!`` is the negated one.

        Returns:
            Whether the object passes.
        """
        if not all(_label_holds(v, labels) for v in self.fields.get(key, ())):
            return False
        return not any(_label_holds(v, labels) for v in self.fields.get(key + "!", ()))


def _label_holds(expr: str, labels: Mapping[str, str]) -> bool:
    name, has_value, value = expr.partition("=")
    if name not in labels:
        return False
    return not has_value or labels[name] == value


def parse_filters(raw: str | None) -> Filters:
    """Parse the ``filters`` query parameter.

    Args:
        raw: the JSON text; ``None`` or empty means no filters.

    Returns:
        The parsed filters.

    Raises:
        InvalidParameter: the text is not a JSON map of sets or map of lists of strings.
    """
    if not raw:
        return Filters()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise invalid_filter() from exc
    if not isinstance(data, dict):
        raise invalid_filter()
    fields: dict[str, list[str]] = {}
    for key, value in data.items():
        fields[key] = _values(value)
    return Filters(_freeze(fields))


def _values(value: object) -> list[str]:
    if isinstance(value, dict) and all(isinstance(v, bool) for v in value.values()):
        return [str(k) for k in value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(dict.fromkeys(value))
    if value is None:
        return []
    raise invalid_filter()
