"""The C inner loops of the audit writer and the audit queue give exactly what their Python references give.

``dockyard.security._chainfast`` (built by setup.py) replaces :func:`dockyard.security.audit._chain_py`
and :func:`dockyard.security.audit_writer._texts_py`; a line that differs by one byte breaks the chain's
meaning (or verification), so every case here compares the two outputs whole. Its ``RecordBuffer`` and
``unpack`` replace :class:`~dockyard.security.audit_records.RecordBufferPy` and ``_unpack_py``: the same
bytes for the same records, the same errors for the same hostile input.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import random
import struct
import sys
import time
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from dockyard.security import audit, audit_records, audit_writer
from dockyard.security.audit import GENESIS, _chain_py, line_hash
from dockyard.security.audit_records import RecordBufferPy, _unpack_py
from dockyard.security.audit_writer import Formatter, Record, Shape, _fixed, _render_py, _texts_py


def _load() -> ModuleType:
    try:
        return importlib.import_module("dockyard.security._chainfast")
    except ImportError as exc:  # no skip: CI builds it, and without it the writer is ~8x slower
        pytest.fail(
            f"the C extension dockyard.security._chainfast is not built ({exc}); build it with "
            "`.venv/bin/pip install --no-deps -e .` (needs gcc, python3-dev and libssl-dev)"
        )


fast = _load()
CALLER = '{"transport":"unix","uid":0,"gid":0,"pid":1234,"user":"root","group":"root","groups":["root"]}'
HOSTILE = ['/a"b', "/back\\slash", "/ctl\x00\x01\x1f\x7f", "/pct%s%d%%", "/ünï/κόσμε", "/emoji\U0001f600", ""]


def _fixed_of(shape: Shape) -> tuple[str, bool]:
    return _fixed(shape), shape[0] == "done"


def _both(records: list[Any], offset: float = 1.7e9) -> list[str]:
    expected = _texts_py(records, _fixed_of, offset)
    assert fast.texts(records, _fixed_of, offset) == expected
    return expected


def _shape(
    phase: str = "done",
    path: str = "/_ping",
    op: str | None = "SystemPing",
    target: str | None = None,
    decision: tuple[str, str, str] | None = ("allow", "admins", ""),
) -> Shape:
    return (phase, CALLER, "GET", path, op, target, decision)


def _done(shape: Shape, rid: str = "1f", status: int = 200, nbytes: int = 2, started: float = 100.0,
          ended: float = 100.00003) -> Record:  # fmt: skip
    return (shape, rid, status, nbytes, started, ended)


def _start(shape: Shape, rid: str = "2a", ended: float = 100.5) -> Record:
    return (shape, rid, None, None, None, ended)


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


# ---- RecordBuffer and unpack --------------------------------------------------------------------------


def _fill_both(records: list[Any]) -> tuple[list[Any], bytes]:
    """The records through the C buffer and the reference: the same take(); returns it."""
    c, py = fast.RecordBuffer(), RecordBufferPy()
    for rec in records:
        c.add(*rec)
        py.add(*rec)
    assert (len(c), c.starts, bool(c)) == (len(py), py.starts, bool(py))
    taken, expected = c.take(), py.take()
    assert taken[1] == expected[1]  # byte for byte
    assert [id(x) for x in taken[0]] == [id(x) for x in expected[0]]  # the same objects, in the same order
    return taken


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


# ---- render: packed records straight to chained lines ---------------------------------------------------


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
