"""Tests for Docker's filter grammar."""

from __future__ import annotations

import pytest

from dockyard.engine.filters import Filters, parse_filters
from dockyard.errors import InvalidParameter


def test_map_of_sets() -> None:
    f = parse_filters('{"status":{"exited":true,"created":true}}')
    assert sorted(f.get("status")) == ["created", "exited"]
    assert f.get("missing") == []


def test_legacy_map_of_lists() -> None:
    f = parse_filters('{"status":["exited","exited"],"label":["a=b"]}')
    assert f.get("status") == ["exited"]
    assert f.get("label") == ["a=b"]


@pytest.mark.parametrize("raw", [None, ""])
def test_empty(raw: str | None) -> None:
    f = parse_filters(raw)
    assert not f
    assert f.keys() == []


@pytest.mark.parametrize("raw", ["{", "[1]", '{"a": 3}', '{"a": [1]}', '{"a": {"b": "c"}}'])
def test_bad_json(raw: str) -> None:
    with pytest.raises(InvalidParameter, match=r"^invalid filter$"):
        parse_filters(raw)


def test_validate() -> None:
    f = parse_filters('{"status":{"exited":true},"bogus":{"x":true}}')
    with pytest.raises(InvalidParameter) as info:
        f.validate({"status"})
    assert info.value.message == "invalid filter 'bogus'"
    f.validate({"status", "bogus"})


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_bool(value: str, expected: bool) -> None:
    assert Filters.of(dangling=[value]).get_bool("dangling") is expected


def test_bool_absent_uses_default() -> None:
    assert Filters().get_bool("dangling", True) is True


@pytest.mark.parametrize("values", [["yes"], ["true", "false"], []])
def test_bool_invalid(values: list[str]) -> None:
    with pytest.raises(InvalidParameter, match="invalid filter 'dangling"):
        Filters.of(dangling=values).get_bool("dangling")


def test_bool_invalid_text() -> None:
    with pytest.raises(InvalidParameter) as info:
        Filters.of(dangling=["yes"]).get_bool("dangling")
    assert info.value.message == "invalid filter 'dangling=[yes]'"


def test_match_label() -> None:
    labels = {"a": "1", "b": "2"}
    assert Filters().match_label(labels)
    assert Filters.of(label=["a"]).match_label(labels)
    assert Filters.of(label=["a=1", "b"]).match_label(labels)
    assert not Filters.of(label=["a=2"]).match_label(labels)
    assert not Filters.of(label=["a", "c"]).match_label(labels)
    assert not Filters.of(label=["a"]).match_label({})


def test_match_label_negated() -> None:
    f = parse_filters('{"label!":{"a=1":true}}')
    assert not f.match_label({"a": "1"})
    assert f.match_label({"a": "2"})
    assert f.match_label({})


def test_exact_fuzzy_regex() -> None:
    f = Filters.of(id=["abc"], name=["^web"])
    assert f.exact_match("id", "abc")
    assert not f.exact_match("id", "abcd")
    assert f.fuzzy_match("id", "abcd")
    assert not f.fuzzy_match("id", "xabc")
    assert f.match("name", "web1")
    assert not f.match("name", "aweb")
    assert f.match("other", "anything")
    assert Filters.of(name=["("]).match("name", "(") and not Filters.of(name=["("]).match("name", "x")
