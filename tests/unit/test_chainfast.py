"""The C inner loops of the audit writer give exactly what their Python references give.

``dockyard.security._chainfast`` (built by setup.py) replaces :func:`dockyard.security.audit._chain_py`
and :func:`dockyard.security.audit_writer._texts_py`; a line that differs by one byte breaks the chain's
meaning (or verification), so every case here compares the two outputs whole. Its ``RecordBuffer`` and
``unpack`` are tested in test_chainfast_records.py, ``render`` in test_chainfast_render.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from dockyard.security import audit, audit_records, audit_writer
from dockyard.security.audit import GENESIS, _chain_py, line_hash
from dockyard.security.audit_writer import Formatter, Shape, _texts_py
from tests.unit.chainfast_helpers import (
    HOSTILE,
    _done,
    _fixed_of,
    _shape,
    _start,
    load_chainfast,
)

fast = load_chainfast()  # fails (no skip) every test here when the extension is not built


def _both(records: list[Any], offset: float = 1.7e9) -> list[str]:
    expected = _texts_py(records, _fixed_of, offset)
    assert fast.texts(records, _fixed_of, offset) == expected
    return expected


def test_the_writer_uses_the_c_loops() -> None:
    assert vars(audit)["_chain"] is fast.chain
    assert vars(audit_writer)["_texts"] is fast.texts and vars(audit_writer)["_render"] is fast.render
    assert audit_records.RecordBuffer is fast.RecordBuffer and audit_records.unpack is fast.unpack


def test_plain_done_record_is_the_expected_json() -> None:
    (text,) = _both([_done(_shape())], offset=1_700_000_000.0)
    record = json.loads(text + "}")
    assert record["time"] == "2023-11-14T22:15:00.000030Z"
    assert record["status"] == 200 and record["bytes"] == 2 and record["duration_ms"] == 0.03
    assert text.endswith(',"duration_ms":0.030')


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_paths_and_targets(text: str) -> None:
    shapes = [_shape(path=text), _shape(target=text), _shape(op=text), _shape(decision=("deny", text, text))]
    texts = _both([_done(s) for s in shapes] + [_start(_shape("start", path=text, target=text))])
    for t in texts:
        json.loads(t + "}")  # still JSON


def test_none_target_operation_and_decision_with_and_without_reason() -> None:
    shapes = [
        _shape(op=None, target=None, decision=None),
        _shape(decision=("deny", "no-exec", "exec is off")),
        _shape(decision=("allow", "admins", "")),
        _shape(target="abc", decision=("deny", "r", "")),
    ]
    texts = _both([_done(s) for s in shapes])
    assert '"operation":null,"target":null,"status"' in texts[0]
    assert '"reason":"exec is off"' in texts[1] and '"reason"' not in texts[2]


def test_start_and_done_records_of_many_shapes_interleaved() -> None:
    rng = random.Random(7)
    shapes = [_shape(path=f"/p/{i}%d", target=HOSTILE[i % len(HOSTILE)]) for i in range(40)]
    starts = [_shape("start", path=f"/s/{i}") for i in range(40)]
    records: list[Any] = []
    for i in range(3000):
        if rng.random() < 0.3:
            records.append(_start(rng.choice(starts), rid=f"{i:x}", ended=1000 + i * 1e-4))
        else:
            records.append(_done(rng.choice(shapes), rid=f"{i:x}", started=1000 + i * 1e-4 - 0.002,
                                 ended=1000 + i * 1e-4))  # fmt: skip
    assert len(_both(records)) == 3000


def test_formatter_texts_equal_the_reference() -> None:
    shape = _shape()
    records = [_done(shape, rid=f"{i:x}", ended=50 + i * 0.37) for i in range(300)]
    assert Formatter().texts(records, 1.7e9 + 5, 5.0) == _texts_py(records, _fixed_of, 1.7e9)


@pytest.mark.parametrize("offset", [0.0, 1.7e9, 1.7e9 + 0.9999999, 4.1e9, 2.5e11, -5.5, 1e-7])
def test_times_around_second_boundaries_and_large_offsets(offset: float) -> None:
    shape, start = _shape(), _shape("start")
    ends = [0.0, 0.999999, 0.9999995, 0.99999999999, 1.0, 1.0000001, 59.9999999, 86399.9999999, 1e6 + 0.5]
    records = [_done(shape, ended=e, started=e - 0.001) for e in ends]
    records += [_start(start, ended=e) for e in ends]
    _both(records, offset)


def test_durations_and_byte_counts() -> None:
    shape = _shape()
    rng = random.Random(3)
    durations = [0.0, -0.0, 1e-9, 5e-7, 4.9999e-7, 0.0625e-3, 0.1875e-3, 1e-3, 123.4565, 1e9, 1e12, 1e13,
                 1e300, float("inf"), float("-inf"), float("nan"), -0.0004, -2.5e-3]  # fmt: skip
    durations += [rng.uniform(0, 10) ** rng.randint(-8, 8) for _ in range(3000)]
    records: list[Any] = [_done(shape, started=100.0, ended=100.0 + d) for d in durations if abs(d) < 1e6]
    records += [(shape, "x", 100.0, 0, d, 0.0) for d in durations]  # the difference exactly -d
    counts = [0, 1, -1, 200, -500, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**40, -(10**40), True]
    records += [_done(shape, status=c, nbytes=c) for c in counts]
    _both(records)


def test_ties_round_half_even_like_python() -> None:
    shape = _shape()
    ties = [k / 2048 for k in range(0, 4096)]  # ms values whose thousandths are often exact ties
    records = [(shape, "t", 1, 1, 0.0, t / 1000) for t in ties]
    records += [(shape, "t", 1, 1, 0.0, t) for t in ties]
    _both(records, offset=0.0)


def test_numbers_python_formats_with_int() -> None:
    shape = _shape()
    _both([_done(shape, status=404.9, nbytes=3.0)])  # type: ignore[arg-type]  # '%d' of a float is int()


def test_request_ids_non_ascii_and_not_str() -> None:
    shape = _shape(path="/ü")
    not_str: list[Any] = [(shape, 7, 200, 2, 1.0, 2.0), (_shape("start"), None, None, None, None, 2.0)]
    _both([_done(shape, rid="ä\U0001f600"), _done(shape, rid=""), *not_str])


def test_empty_list() -> None:
    assert fast.texts([], _fixed_of, 0.0) == _texts_py([], _fixed_of, 0.0) == []
    assert fast.chain([], GENESIS) == _chain_py([], GENESIS) == ([], GENESIS)


def _raises_like_python(records: list[Any], fixed_of: Callable[[Any], Any] = _fixed_of) -> type[Exception]:
    with pytest.raises(Exception) as expected:
        _texts_py(records, fixed_of, 1.0)
    with pytest.raises(expected.type):
        fast.texts(records, fixed_of, 1.0)
    return expected.type


@pytest.mark.parametrize(
    "record",
    [
        (_shape(), "r", None, 2, 1.0, 2.0),  # status None
        (_shape(), "r", "200", 2, 1.0, 2.0),  # status str
        (_shape(), "r", 200, [], 1.0, 2.0),
        (_shape(), "r", 200, 2, "1.0", 2.0),  # started str
        (_shape(), "r", 200, 2, 1.0, "2.0"),  # ended str
        (_shape(), "r", 200, 2, 1.0, None),
        (_shape(), "r", None, None, None, 2.0),  # a done shape without the tail values
        (_shape("start"), "r", 200, 2, 1.0, 2.0),  # a start shape with them
        7,  # not a record
    ],
)
def test_wrong_types_raise_type_error(record: Any) -> None:
    assert _raises_like_python([record]) is TypeError


def test_wrong_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError):
        fast.texts(None, _fixed_of, 0.0)
    with pytest.raises(TypeError):
        fast.texts([], None, 0.0)
    with pytest.raises(TypeError):
        fast.texts([], _fixed_of, "0")
    with pytest.raises(TypeError):
        fast.texts([_done(_shape())], lambda s: "not a tuple", 0.0)
    with pytest.raises(TypeError):
        fast.texts([])
    wrong: list[tuple[Any, Any]] = [(None, GENESIS), (("a",), GENESIS), ([b"a"], GENESIS), ([1], GENESIS)]
    for bodies, head in [*wrong, (["a"], None)]:
        with pytest.raises(TypeError):
            fast.chain(bodies, head)


def test_wrong_record_lengths_raise_like_python() -> None:
    assert _raises_like_python([(_shape(), "r", 200)]) is ValueError
    assert _raises_like_python([(*_done(_shape()), 1)]) is ValueError


def test_errors_of_fixed_of_propagate() -> None:
    def broken(shape: Shape) -> tuple[str, bool]:
        raise KeyError("boom")

    assert _raises_like_python([_done(_shape())], broken) is KeyError


def test_times_out_of_range_raise_like_python() -> None:
    for ended in (float("inf"), float("nan"), 1e30):
        _raises_like_python([_start(_shape("start"), ended=ended)])


def test_chain_matches_hashlib_over_a_long_list() -> None:
    rng = random.Random(11)
    alphabet = 'ab"\\%{}\x00\x7fé€\U0001f600 '
    bodies = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 600))) for _ in range(5000)]
    lines, head = fast.chain(bodies, GENESIS)
    assert (lines, head) == _chain_py(bodies, GENESIS)
    assert head == line_hash(lines[-1]) and len(lines) == 5000


def test_chain_from_any_head_and_unicode_head() -> None:
    for head in ["", "abc", "é", GENESIS]:
        assert fast.chain(['{"a":1', "ü"], head) == _chain_py(['{"a":1', "ü"], head)


def test_chain_lone_surrogate_raises_like_encode() -> None:
    with pytest.raises(UnicodeEncodeError):
        _chain_py(["ok", "bad\ud800"], GENESIS)
    with pytest.raises(UnicodeEncodeError):
        fast.chain(["ok", "bad\ud800"], GENESIS)
