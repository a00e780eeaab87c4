"""``dockyard.security._chainfast.render`` gives exactly what its Python reference gives.

It renders packed records straight to chained lines: byte for byte what
:func:`dockyard.security.audit_writer._render_py` (unpack, texts, chain, join) gives, with the same errors
in the same order for the same hostile input.
"""

from __future__ import annotations

import json
import math
import random
import struct
import sys
from typing import Any

import pytest

from dockyard.security.audit import GENESIS, _chain_py, line_hash
from dockyard.security.audit_records import _unpack_py
from dockyard.security.audit_writer import Record, _render_py, _texts_py
from tests.unit.chainfast_helpers import (
    HOSTILE,
    _done,
    _fill_both,
    _fixed_of,
    _shape,
    _start,
    load_chainfast,
)

fast = load_chainfast()  # fails (no skip) every test here when the extension is not built


def _old_path(templates: list[Any], data: bytes, head: str, offset: float, dropped: int) -> tuple[bytes, str]:
    """What the writer did before render: unpack, texts, dropped_before, chain, join."""
    bodies = _texts_py(_unpack_py(templates, data), lambda t: t, offset)
    if dropped and bodies:
        bodies[0] += f',"dropped_before":{dropped}'
    lines, head = _chain_py(bodies, head)
    return b"".join(line + b"\n" for line in lines), head


def _render_both(templates: Any, data: Any, pos: int = 0, count: int = 1 << 30, head: Any = GENESIS,
                 offset: Any = 1.7e9, dropped: Any = 0) -> tuple[bytes, str, int]:  # fmt: skip
    args = (templates, data, pos, count, head, offset, dropped)
    expected = _render_py(*args)
    assert fast.render(*args) == expected
    return expected


def _render_raises(*args: Any) -> type[Exception]:
    with pytest.raises(Exception) as expected:
        _render_py(*args)
    with pytest.raises(expected.type):
        fast.render(*args)
    return expected.type


def _packed(records: list[Any]) -> tuple[list[tuple[str, bool]], bytes]:
    """The templates of the records' shapes and the packed records (as a frame carries them)."""
    shapes, data = _fill_both(records)
    return [_fixed_of(s) for s in shapes], data


def _frame(n: int, seed: int, n_shapes: int = 16, text: str = "") -> list[Record]:
    """``n`` records of many shapes, start records (of start shapes) among them."""
    rng = random.Random(seed)
    done = [_shape(path=f"/p/{i}{text}", target=text or None) for i in range(n_shapes)]
    start = [_shape("start", path=f"/s/{i}{text}") for i in range(max(1, n_shapes // 4))]
    out: list[Record] = []
    for i in range(n):
        ended = 1000 + i * 3.7e-5
        if rng.random() < 0.2:
            out.append(_start(rng.choice(start), rid=f"{i:x}", ended=ended))
        else:
            out.append(_done(rng.choice(done), rid=f"{i:x}", status=rng.choice([200, 204, 404, 500]),
                             nbytes=rng.randint(0, 1 << 40), started=ended - rng.random() / 100,
                             ended=ended))  # fmt: skip
    return out


@pytest.mark.parametrize("dropped", [0, 1, 12345, sys.maxsize])
def test_render_is_the_old_path_byte_for_byte(dropped: int) -> None:
    templates, data = _packed(_frame(700, seed=dropped % 97))
    lines, head, pos = _render_both(templates, data, dropped=dropped)
    assert (lines, head) == _old_path(templates, data, GENESIS, 1.7e9, dropped) and pos == len(data)
    rows = lines.split(b"\n")
    assert len(rows) == 701 and rows[-1] == b"" and head == line_hash(rows[-2])
    assert json.loads(rows[0]).get("dropped_before") == (dropped or None)
    assert all("dropped_before" not in json.loads(r) for r in rows[1:-1])
    assert json.loads(rows[1])["prev"] == line_hash(rows[0])


@pytest.mark.parametrize("text", [*HOSTILE, "\ufeff\u2028\u2029", "\\u0000", '"},{"', "%(x)s"])
def test_render_hostile_text_in_paths_targets_and_callers(text: str) -> None:
    caller = json.dumps({"user": text, "groups": [text]}, ensure_ascii=False)
    shapes = [_shape(path=text, target=text), _shape(decision=("deny", text, text)),
              ("done", caller, "GET", "/x", "Ping", text, None), _shape("start", path=text)]  # fmt: skip
    records = [_done(shapes[0]), _done(shapes[1], rid=""), _done(shapes[2]), _start(shapes[3])] * 3
    templates, data = _packed(records)
    templates.append((f',"raw":"{text}\U0001f600"', True))  # a non-ASCII template not escaped at all
    data += struct.pack("<IB", 4, 1) + b"z" + struct.pack("<iqdd", 200, 2, 1.0, 2.0)
    lines, _, _ = _render_both(templates, data, dropped=3)
    for row in lines.splitlines()[:-1]:
        json.loads(row)


@pytest.mark.parametrize("offset", [0.0, 1.7e9, 1.7e9 + 0.9999999, 4.1e9, 2.5e11, -5.5, 1e-7, 3])
def test_render_times_around_second_boundaries(offset: float) -> None:
    ends = [0.0, 0.999999, 0.9999995, 0.99999999999, 1.0, 1.0000001, 59.9999999, 86399.9999999, 1e6 + 0.5]
    records = [_done(_shape(), ended=e, started=e - 0.001) for e in ends]
    records += [_start(_shape("start"), ended=e) for e in ends]
    _render_both(*_packed(records), offset=offset)


def test_render_rounds_durations_like_python() -> None:
    ties = [k / 2048 for k in range(4096)]  # ms values whose thousandths are often exact ties
    durations = [0.0, -0.0, 5e-7, 4.9999e-7, 0.0625e-3, 0.1875e-3, 123.4565, 1e9, 1e13, 1e300, -2.5e-3]
    shape = _shape()
    records = [(shape, "t", 1, 1, 0.0, t / 1000) for t in ties] + [(shape, "t", 1, 1, 0.0, t) for t in ties]
    records += [(shape, "d", 200, 2, -d, 0.0) for d in durations]  # the difference exactly d
    records += [_done(shape, status=s, nbytes=b) for s, b in [(0, 0), (2**31 - 1, 2**63 - 1)]]
    _render_both(*_packed(records), offset=0.0)


def test_render_in_chunks_is_render_of_the_whole() -> None:
    templates, data = _packed(_frame(1000, seed=2, n_shapes=300))  # many shapes, a few records each
    whole = _render_both(templates, data, head="h", dropped=7)
    for count in (1, 7, 128, 999):
        parts, pos, head, dropped = b"", 0, "h", 7
        while pos < len(data):
            lines, head, pos = _render_both(templates, data, pos, count, head, dropped=dropped)
            assert lines.count(b"\n") == min(count, 1000 - parts.count(b"\n"))
            parts, dropped = parts + lines, 0
        assert (parts, head, pos) == whole
    assert _render_both(templates, data, len(data), 5, "h") == (b"", "h", len(data))
    assert _render_both(templates, data, 0, 0, "h", dropped=4) == (b"", "h", 0)
    assert _render_both([], b"", head="é") == (b"", "é", 0)


def test_render_takes_bytes_like_data_tuple_templates_and_any_head() -> None:
    templates, data = _packed(_frame(50, seed=4))
    expected = _render_both(templates, data)
    assert fast.render(tuple(templates), bytearray(data), 0, 99, GENESIS, 1.7e9, 0) == expected
    assert fast.render(templates, memoryview(data), 0, 99, GENESIS, int(1.7e9), False) == expected
    for head in ["", "é", "\U0001f600" * 3]:
        _render_both(templates, data, head=head)


def test_render_of_every_truncation_raises_or_gives_the_whole_records() -> None:
    templates, data = _packed([_done(_shape(), rid="abc"), _start(_shape("start"), rid=""), _done(_shape())])
    for n in range(len(data) + 1):
        whole = {0: 0, 36: 1, 69: 2, 104: 3}.get(n)
        if whole is None:
            assert _render_raises(templates, data[:n], 0, 9, GENESIS, 1.0, 0) is ValueError
        else:
            assert _render_both(templates, data[:n])[0].count(b"\n") == whole
            if whole:  # records after the count are not looked at
                assert _render_both(templates, data[:n] + b"\xff", 0, whole)[2] == n


def test_render_of_garbage_never_crashes_and_agrees_with_the_reference() -> None:
    rng = random.Random(17)
    templates, valid = _packed(_frame(40, seed=3, n_shapes=3))
    for i in range(3000):
        edited = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            edited[rng.randrange(len(edited))] = rng.getrandbits(8)
        data = bytes(edited) if i % 4 else bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 120)))
        args = (templates, data, 0, 1 << 20, GENESIS, 1.7e9, i % 3)
        try:
            expected: Any = _render_py(*args)
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            expected = type(exc)
        if isinstance(expected, type):
            with pytest.raises(expected):
                fast.render(*args)
        else:
            assert fast.render(*args) == expected


def test_render_rejects_bad_templates_and_mismatched_phases() -> None:
    shape, start = _shape(), _shape("start")
    _, data = _packed([_done(shape), _start(start)])
    good = [_fixed_of(shape), _fixed_of(start)]
    for bad in [None, "text", ("text",), ("text", True, 1), (b"bytes", True), [",x", True], (1, True)]:
        assert _render_raises([good[0], bad], data, 0, 9, GENESIS, 1.0, 0) is TypeError
        assert _render_both([good[0], good[1], bad], data)[2] == len(data)  # unused: not looked at
    for swapped in ([good[1], good[1]], [good[0], good[0]]):  # a done record with a start template, ...
        assert _render_raises(swapped, data, 0, 9, GENESIS, 1.0, 0) is TypeError
    assert _render_raises(good[:1], data, 0, 9, GENESIS, 1.0, 0) is ValueError  # index out of range

    class Falsy:
        def __bool__(self) -> bool:
            raise KeyError("boom")

    assert _render_raises([good[0], (good[1][0], Falsy())], data, 0, 9, GENESIS, 1.0, 0) is KeyError


def test_render_errors_come_in_the_reference_order() -> None:
    shape, start = _shape(), _shape("start")
    _, data = _packed([_done(shape), _start(start, ended=math.inf), _done(shape)])
    surrogate = ('"s":"\ud800"', True)
    assert _render_raises([surrogate, _fixed_of(start)], data, 0, 9, GENESIS, 1.0, 0) is OverflowError
    assert _render_raises([surrogate, _fixed_of(start)], data, 0, 1, GENESIS, 1.0, 0) is UnicodeEncodeError
    assert _render_raises([surrogate, None], data, 0, 9, GENESIS, 1.0, 0) is TypeError  # texts before chain
    assert _render_raises([surrogate, None], data[:-1], 0, 9, GENESIS, 1.0, 0) is ValueError  # unpack first
    assert _render_raises([_fixed_of(shape)], data, 0, 1, "\udfff", 1.0, 0) is UnicodeEncodeError
    for ended in (math.nan, 1e30, -1e30):
        _, bad = _packed([_start(start, ended=ended)])
        _render_raises([_fixed_of(start)], bad, 0, 9, GENESIS, 1.0, 0)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((None, b"", 0, 1, GENESIS, 1.0, 0), TypeError),
        (({}, b"", 0, 1, GENESIS, 1.0, 0), TypeError),
        (([], "text", 0, 1, GENESIS, 1.0, 0), TypeError),
        (([], b"", 0.0, 1, GENESIS, 1.0, 0), TypeError),
        (([], b"", 0, "1", GENESIS, 1.0, 0), TypeError),
        (([], b"", 0, 1, b"head", 1.0, 0), TypeError),
        (([], b"", 0, 1, GENESIS, "1.0", 0), TypeError),
        (([], b"", 0, 1, GENESIS, 1.0, None), TypeError),
        (([], b"", 1, 1, GENESIS, 1.0, 0), ValueError),  # pos past the end
        (([], b"", -1, 1, GENESIS, 1.0, 0), ValueError),
        (([], b"", 0, -1, GENESIS, 1.0, 0), ValueError),
        (([], b"", 0, 1, GENESIS, 1.0, -1), ValueError),
        (([], b"", 0, 1, GENESIS, 1.0, 2**64), ValueError),
        (([], b"", 2**70, 1, GENESIS, 1.0, 0), ValueError),
        (([], b"", 0, 1, GENESIS, 10**400, 0), OverflowError),
    ],
)
def test_render_wrong_arguments(args: tuple[Any, ...], error: type[Exception]) -> None:
    assert _render_raises(*args) is error


def test_render_argument_count() -> None:
    with pytest.raises(TypeError):
        fast.render([], b"", 0, 1, GENESIS, 1.0)  # type: ignore[call-arg]
