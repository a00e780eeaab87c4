"""The C audit queue gives exactly what its Python reference gives.

``dockyard.security._chainfast``'s ``RecordBuffer`` and ``unpack`` replace
:class:`~dockyard.security.audit_records.RecordBufferPy` and ``_unpack_py``: the same bytes for the same
records, the same errors for the same hostile input.
"""

from __future__ import annotations

import gc
import math
import random
import struct
import time
import weakref
from typing import Any

import pytest

from dockyard.security.audit_records import RecordBufferPy, _unpack_py
from dockyard.security.audit_writer import Record, Shape
from tests.unit.chainfast_helpers import (
    HOSTILE,
    _done,
    _fill_both,
    _shape,
    _start,
    load_chainfast,
)

fast = load_chainfast()  # fails (no skip) every test here when the extension is not built


def _unpack_both(shapes: Any, data: Any) -> list[Any]:
    expected = _unpack_py(shapes, data)
    got = fast.unpack(shapes, data)
    assert got == expected
    assert all(a[0] is b[0] for a, b in zip(got, expected, strict=True))
    return got


def _mixed(n: int, shapes: list[Shape], seed: int = 5) -> list[Record]:
    rng = random.Random(seed)
    out: list[Record] = []
    for i in range(n):
        ended = 1000 + i * 1e-4
        if rng.random() < 0.2:
            out.append(_start(rng.choice(shapes), rid=f"{i:x}", ended=ended))
        else:
            out.append(_done(rng.choice(shapes), rid=f"{i:x}", status=rng.choice([200, 204, 304, 404, 500]),
                             nbytes=rng.randint(0, 1 << 40), started=ended - 0.002, ended=ended))  # fmt: skip
    return out


def test_record_buffer_packs_the_documented_format() -> None:
    shape, start = _shape(), _shape("start")
    shapes, data = _fill_both([_done(shape, rid="1f", status=200, nbytes=2, started=1.5, ended=2.5),
                               _start(start, rid="", ended=3.0)])  # fmt: skip
    assert shapes == [shape, start]
    expected = struct.pack("<IB", 0, 2) + b"1f" + struct.pack("<iqdd", 200, 2, 1.5, 2.5)
    expected += struct.pack("<IB", 1, 0) + struct.pack("<iqdd", -1, -1, math.nan, 3.0)
    assert data == expected


def test_record_buffer_round_trips_done_and_start_records() -> None:
    shapes = [_shape(path=f"/p/{i}", target=HOSTILE[i % len(HOSTILE)]) for i in range(20)]
    shapes += [_shape("start", path=f"/s/{i}") for i in range(5)]
    records = _mixed(3000, shapes)
    records.append(_done(shapes[0], rid="x" * 255, status=2**31 - 1, nbytes=2**63 - 1, started=-1e300,
                         ended=float("inf")))  # fmt: skip
    records.append(_done(shapes[0], rid="0", status=0, nbytes=0, started=0.0, ended=-0.0))
    got = _unpack_both(*_fill_both(records))
    assert got == records
    assert all(a[0] is b[0] for a, b in zip(got, records, strict=True))  # the shape objects themselves
    assert [r[2] is None for r in got] == [r[4] is None for r in records]


def test_record_buffer_counts_start_records() -> None:
    buf = fast.RecordBuffer()
    assert (len(buf), buf.starts, bool(buf)) == (0, 0, False)
    buf.add(*_start(_shape("start")))
    buf.add(*_done(_shape()))
    buf.add(*_start(_shape("start")))
    assert (len(buf), buf.starts, bool(buf)) == (3, 2, True)


def test_shapes_are_deduplicated_by_identity() -> None:
    a, b = _shape(), _shape()
    assert a == b and a is not b
    shapes, _ = _fill_both([_done(a), _done(b), _done(a), _done(b)])  # alternating: past the last-shape cache
    assert len(shapes) == 2 and shapes[0] is a and shapes[1] is b
    shapes, data = _fill_both([_done(a, rid=f"{i:x}") for i in range(1000)])
    assert shapes == [a] and len(_unpack_both(shapes, data)) == 1000


def test_many_distinct_shapes_grow_the_table() -> None:
    shapes = [_shape(path=f"/{i}") for i in range(5000)]
    rng = random.Random(9)
    records = [_done(rng.choice(shapes), rid=f"{i:x}") for i in range(20000)]
    taken, order = _fill_both(records)[0], []
    seen: set[int] = set()
    for rec in records:
        if id(rec[0]) not in seen:
            seen.add(id(rec[0]))
            order.append(rec[0])
    assert len(taken) == len(order) and all(x is y for x, y in zip(taken, order, strict=True))


def test_take_empties_the_buffer_and_its_shapes() -> None:
    for buf in (fast.RecordBuffer(), RecordBufferPy()):
        a, b = _shape(path="/a"), _shape(path="/b")
        buf.add(*_done(a))
        buf.add(*_start(b))
        first = buf.take()
        assert (len(buf), buf.starts, bool(buf)) == (0, 0, False)
        assert buf.take() == ([], b"")
        buf.add(*_done(b))  # a new fill: b is its first shape now
        assert buf.take()[0] == [b] and first[0] == [a, b]


def test_large_fills() -> None:
    shapes = [_shape(path=f"/p/{i}") for i in range(50)] + [_shape("start", path="/s")]
    records = _mixed(100_000, shapes, seed=2)
    taken = _fill_both(records)
    assert _unpack_both(*taken) == records
    buf = fast.RecordBuffer()
    for _ in range(3):  # the same buffer, refilled
        for rec in records[:50_000]:
            buf.add(*rec)
        assert fast.unpack(*buf.take()) == records[:50_000]


def test_default_ended_is_time_monotonic() -> None:
    for buf in (fast.RecordBuffer(), RecordBufferPy()):
        before = time.monotonic()
        buf.add(_shape(), "1", 200, 2, before)
        buf.add(_shape("start"), "2", None, None, None)
        after = time.monotonic()
        ends = [r[5] for r in fast.unpack(*buf.take())]
        assert all(before <= e <= after for e in ends), (before, ends, after)


def test_explicit_ended_none_means_now() -> None:
    buf = fast.RecordBuffer()
    before = time.monotonic()
    buf.add(_shape(), "1", 200, 2, before, None)
    assert before <= fast.unpack(*buf.take())[0][5] <= time.monotonic()


def _add_raises(args: tuple[Any, ...]) -> type[Exception]:
    """add(*args) raises the same error in C and in the reference, and leaves both buffers as they were."""
    c, py = fast.RecordBuffer(), RecordBufferPy()
    for buf in (c, py):
        buf.add(*_done(_shape(path="/before")))
    with pytest.raises(Exception) as expected:
        py.add(*args)
    with pytest.raises(expected.type):
        c.add(*args)
    assert (len(c), len(py), c.starts, py.starts) == (1, 1, 0, 0)
    taken, reference = c.take(), py.take()
    assert taken[1] == reference[1] and len(taken[0]) == len(reference[0]) == 1
    return expected.type


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((_shape(), "é", 200, 2, 1.0, 2.0), ValueError),  # not ASCII
        ((_shape(), "\U0001f600", 200, 2, 1.0, 2.0), ValueError),
        ((_shape(), "x" * 256, 200, 2, 1.0, 2.0), ValueError),  # too long
        ((_shape(), 7, 200, 2, 1.0, 2.0), TypeError),  # not str
        ((_shape(), b"7", 200, 2, 1.0, 2.0), TypeError),
        ((_shape(), None, None, None, None, 2.0), TypeError),
        ((_shape(), "r", "200", 2, 1.0, 2.0), TypeError),
        ((_shape(), "r", 200.0, 2, 1.0, 2.0), TypeError),
        ((_shape(), "r", 200, [], 1.0, 2.0), TypeError),
        ((_shape(), "r", 200, 2, "1.0", 2.0), TypeError),
        ((_shape(), "r", 200, 2, 1.0, "2.0"), TypeError),
        ((_shape(), "r", None, 2, 1.0, 2.0), TypeError),  # None and values mixed
        ((_shape(), "r", 200, None, 1.0, 2.0), TypeError),
        ((_shape(), "r", 200, 2, None, 2.0), TypeError),
        ((_shape(), "r", None, None, 1.0, 2.0), TypeError),
        ((_shape(), "r", -1, 2, 1.0, 2.0), ValueError),  # out of the format's range
        ((_shape(), "r", 2**31, 2, 1.0, 2.0), ValueError),
        ((_shape(), "r", 200, -1, 1.0, 2.0), ValueError),
        ((_shape(), "r", 200, 2**63, 1.0, 2.0), ValueError),
        ((_shape(), "r", 200, 10**40, 1.0, 2.0), ValueError),
        ((_shape(), "r", 200, 2, math.nan, 2.0), ValueError),  # NaN is None in the format
        ((_shape(), "r", 200, 2, 10**400, 2.0), OverflowError),
        ((_shape(), "r", 200, 2), TypeError),  # too few arguments
        ((_shape(), "r", 200, 2, 1.0, 2.0, 3.0), TypeError),  # too many
    ],
)
def test_hostile_records_raise_the_documented_errors(args: tuple[Any, ...], error: type[Exception]) -> None:
    assert _add_raises(args) is error


def test_longest_request_id_and_numbers_that_fit() -> None:
    _fill_both([_done(_shape(), rid="~" * 255, status=True, nbytes=2**63 - 1, started=3, ended=4)])


def test_add_takes_no_keywords() -> None:
    with pytest.raises(TypeError):
        fast.RecordBuffer().add(_shape(), "r", 200, 2, 1.0, ended=2.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        fast.RecordBuffer(1)  # type: ignore[call-arg]


def _unpack_raises(shapes: Any, data: Any) -> type[Exception]:
    with pytest.raises(Exception) as expected:
        _unpack_py(shapes, data)
    with pytest.raises(expected.type):
        fast.unpack(shapes, data)
    return expected.type


def test_unpack_of_every_truncation_raises_or_gives_the_whole_records() -> None:
    shapes, data = _fill_both([_done(_shape(), rid="abc"), _start(_shape("start"), rid=""), _done(_shape())])
    whole = {0: 0, 36: 1, 69: 2, 104: 3}  # a record is 33 bytes and its request id
    assert len(data) == 104
    for n in range(len(data) + 1):
        if n in whole:
            assert len(_unpack_both(shapes, data[:n])) == whole[n]
        else:
            assert _unpack_raises(shapes, data[:n]) is ValueError


def test_unpack_rejects_malformed_records() -> None:
    shape = _shape()
    good = struct.pack("<IB", 0, 1) + b"r" + struct.pack("<iqdd", 200, 2, 1.0, 2.0)
    bad = [
        struct.pack("<IB", 1, 1) + b"r" + struct.pack("<iqdd", 200, 2, 1.0, 2.0),  # index out of range
        struct.pack("<IB", 2**32 - 1, 1) + b"r" + struct.pack("<iqdd", 200, 2, 1.0, 2.0),
        struct.pack("<IB", 0, 1) + b"\xe9" + struct.pack("<iqdd", 200, 2, 1.0, 2.0),  # not ASCII
        struct.pack("<IB", 0, 1) + b"r" + struct.pack("<iqdd", -2, 2, 1.0, 2.0),  # impossible values
        struct.pack("<IB", 0, 1) + b"r" + struct.pack("<iqdd", 200, -1, 1.0, 2.0),
        struct.pack("<IB", 0, 1) + b"r" + struct.pack("<iqdd", 200, 2, math.nan, 2.0),
        struct.pack("<IB", 0, 1) + b"r" + struct.pack("<iqdd", -1, -1, 1.0, 2.0),  # half a start record
        struct.pack("<IB", 0, 1) + b"r" + struct.pack("<iqdd", -1, 5, math.nan, 2.0),
        struct.pack("<IB", 0, 200) + b"r" + struct.pack("<iqdd", 200, 2, 1.0, 2.0),  # id longer than the data
    ]
    for data in bad:
        assert _unpack_raises([shape], good + data) is ValueError
    assert _unpack_raises([], good) is ValueError
    assert _unpack_both([shape], good) == [(shape, "r", 200, 2, 1.0, 2.0)]


def test_unpack_of_garbage_never_crashes_and_agrees_with_the_reference() -> None:
    rng = random.Random(13)
    shapes = [_shape(), _shape("start")]
    _, valid = _fill_both(_mixed(50, shapes))
    for _ in range(3000):
        if rng.random() < 0.5:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 120)))
        else:  # a valid buffer with a few bytes changed
            edited = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                edited[rng.randrange(len(edited))] = rng.getrandbits(8)
            data = bytes(edited)
        try:
            expected: Any = _unpack_py(shapes, data)
        except ValueError:
            expected = ValueError
        if expected is ValueError:
            with pytest.raises(ValueError):
                fast.unpack(shapes, data)
        else:
            got = fast.unpack(shapes, data)
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):  # NaN != NaN: compare the packed values' text
                assert repr(a) == repr(b)


def test_unpack_takes_bytes_like_data_and_list_or_tuple_shapes() -> None:
    shapes, data = _fill_both([_done(_shape())])
    expected = _unpack_both(shapes, data)
    assert fast.unpack(tuple(shapes), bytearray(data)) == expected == fast.unpack(shapes, memoryview(data))
    assert _unpack_both(shapes, b"") == []


@pytest.mark.parametrize(("shapes", "data"), [(None, b""), ({0: 1}, b""), ([], "text"), ([], None), ([], 5)])
def test_unpack_wrong_types_raise_type_error(shapes: Any, data: Any) -> None:
    assert _unpack_raises(shapes, data) is TypeError


def test_unpack_wrong_argument_count() -> None:
    with pytest.raises(TypeError):
        fast.unpack([])  # type: ignore[call-arg]


class _Shape:
    """A shape object that can be weakly referenced (and refer back to a buffer)."""

    buf: Any = None


def test_the_buffer_releases_its_shapes() -> None:
    buf = fast.RecordBuffer()
    shape = _Shape()
    ref = weakref.ref(shape)
    buf.add(shape, "1", 200, 2, 1.0, 2.0)
    assert shape in gc.get_referents(buf)  # traversed: the GC sees the reference
    taken = buf.take()
    assert gc.get_referents(buf) == [] and taken[0] == [shape]
    del shape, taken
    assert ref() is None  # take() handed its reference over, nothing leaked
    shape = _Shape()
    ref = weakref.ref(shape)
    buf.add(shape, "1", 200, 2, 1.0, 2.0)
    del shape, buf
    assert ref() is None  # dealloc released it


def test_a_cycle_through_a_shape_is_collected() -> None:
    buf = fast.RecordBuffer()
    shape = _Shape()
    shape.buf = buf
    buf.add(shape, "1", 200, 2, 1.0, 2.0)
    ref = weakref.ref(shape)
    del shape, buf
    gc.collect()
    assert ref() is None
