"""The audit queue's records, packed: what the serving loop appends per request and the writer renders.

A record is :data:`Record`: ``(shape, request_id, status, bytes, started, ended)``. The shape is what a
connection's requests to one path share (:data:`Shape`); the daemon reuses one shape object for them.
Times are the daemon's ``time.monotonic()``; ``status``/``bytes``/``started`` are None in the ``start``
record of a mutating call (the one the daemon waits for), ints/int/float in every other.

Why packed: the serving loop used to append each record as a tuple to a list and ``marshal`` the list to
the writer process every 50 ms. Per ``GET /_ping`` that was ~1,500 CPU instructions of the serving process
(callgrind: building and freeing the tuple, its GC tracking, marshal's per-object work) in a security
budget of a tenth of the request. :class:`RecordBuffer` instead writes each record's values into one
growing byte buffer and keeps only the shapes as objects, deduplicated by identity; the frame to the
writer carries the distinct shapes (marshal, once each) and the bytes.

The packed format (all little-endian), one record after the other, no header or padding::

    <I  index of the record's shape in the shapes list (first-appearance order within one fill)
    <B  length n of the request id (0..255); then its n bytes (ASCII)
    <i  status          (-1: None)
    <q  bytes           (-1: None)
    <d  started         (NaN: None)
    <d  ended

``status``, ``bytes`` and ``started`` are None together (a ``start`` record) or not at all. The C type
(``dockyard.security._chainfast.RecordBuffer`` and ``unpack``, built by setup.py) follows this format;
:class:`RecordBufferPy` and :func:`_unpack_py` here are its reference (tests/unit/test_chainfast.py
compares the bytes) and serve when the extension is not built.
"""

from __future__ import annotations

import math
import struct
import time
from typing import Any

__all__ = ["Record", "RecordBuffer", "RecordBufferPy", "Shape", "unpack"]

# (phase, caller JSON, method, path, operation, target, (verdict, rule, reason) or None)
Shape = tuple[str, str, str, str, "str | None", "str | None", "tuple[str, str, str] | None"]
Record = tuple[Shape, str, "int | None", "int | None", "float | None", float]

_HEAD = struct.Struct("<IB")  # shape index, request id length
_TAIL = struct.Struct("<iqdd")  # status, bytes, started, ended
RECORD_FIXED = _HEAD.size + _TAIL.size  # a packed record's bytes besides its request id
MAX_RID = 255
_INT32_MAX = (1 << 31) - 1
_INT64_MAX = (1 << 63) - 1


def _number(value: object, what: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(value)
    raise TypeError(f"{what} must be a float, not {type(value).__name__}")


def _count(value: object, what: str, top: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, not {type(value).__name__}")
    if not 0 <= value <= top:
        raise ValueError(f"{what} out of range: {value}")
    return int(value)


class RecordBufferPy:
    """The records queued for the writer, packed (the reference of the C ``RecordBuffer``)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._shapes: list[Any] = []
        self._index: dict[int, int] = {}  # id(shape) -> index; the list keeps the ids valid
        self._count = 0
        self.starts = 0  # how many of the queued records are ``start`` records

    def __len__(self) -> int:
        return self._count

    def add(self, shape: Any, rid: str, status: int | None, nbytes: int | None, started: float | None,
            ended: float | None = None, /) -> None:  # fmt: skip
        """Queue one record; ``ended`` defaults to now (``time.monotonic()``).

        Raises:
            TypeError: a value of the wrong type, or status/bytes/started not all None or all set.
            ValueError: a request id that is not ASCII or longer than 255; a status, byte count or
                start time that the format cannot hold (negative, too large, NaN).
        """
        if not isinstance(rid, str):
            raise TypeError(f"request id must be str, not {type(rid).__name__}")
        if not rid.isascii() or len(rid) > MAX_RID:
            raise ValueError("request id must be ASCII and at most 255 characters")
        if status is None and nbytes is None and started is None:
            tail = (-1, -1, math.nan)
        elif status is None or nbytes is None or started is None:
            raise TypeError("status, bytes and started must be all None (a start record) or all set")
        else:
            begun = _number(started, "started")
            if math.isnan(begun):
                raise ValueError("started must not be NaN")
            tail = (_count(status, "status", _INT32_MAX), _count(nbytes, "bytes", _INT64_MAX), begun)
        end = time.monotonic() if ended is None else _number(ended, "ended")
        index = self._index.get(id(shape))
        if index is None:
            index = self._index[id(shape)] = len(self._shapes)
            self._shapes.append(shape)
        self._data += _HEAD.pack(index, len(rid))
        self._data += rid.encode("ascii")
        self._data += _TAIL.pack(*tail, end)
        self._count += 1
        if status is None:
            self.starts += 1

    def take(self) -> tuple[list[Any], bytes]:
        """The distinct shapes (first-appearance order) and the packed records; empties the buffer."""
        out = (self._shapes, bytes(self._data))
        self._data = bytearray()
        self._shapes = []
        self._index = {}
        self._count = self.starts = 0
        return out


def _unpack_py(shapes: list[Any] | tuple[Any, ...], data: bytes) -> list[Record]:
    """The records packed in ``data`` (:meth:`RecordBufferPy.take`'s), their shapes from ``shapes``.

    Raises:
        TypeError: ``shapes`` is not a list or tuple, ``data`` not bytes-like.
        ValueError: ``data`` is malformed (truncated, a shape index out of range, a request id that is
            not ASCII, an impossible value).
    """
    if not isinstance(shapes, (list, tuple)):
        raise TypeError(f"shapes must be a list or tuple, not {type(shapes).__name__}")
    view = memoryview(data).cast("B")  # TypeError for what is not bytes-like
    out: list[Record] = []
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < _HEAD.size:
            raise ValueError("truncated audit record")
        index, n = _HEAD.unpack_from(view, pos)
        pos += _HEAD.size
        if end - pos < n + _TAIL.size:
            raise ValueError("truncated audit record")
        if index >= len(shapes):
            raise ValueError(f"audit record shape index {index} out of range")
        raw = bytes(view[pos : pos + n])
        if not raw.isascii():
            raise ValueError("audit record request id is not ASCII")
        status, nbytes, started, ended = _TAIL.unpack_from(view, pos + n)
        pos += n + _TAIL.size
        if status == -1 and nbytes == -1 and math.isnan(started):
            out.append((shapes[index], raw.decode("ascii"), None, None, None, ended))
        elif status < 0 or nbytes < 0 or math.isnan(started):
            raise ValueError("audit record with an impossible status, byte count or start time")
        else:
            out.append((shapes[index], raw.decode("ascii"), status, nbytes, started, ended))
    return out


try:
    from dockyard.security._chainfast import RecordBuffer, unpack
except ImportError:  # the optional extension was not built (see setup.py): the reference serves
    RecordBuffer = RecordBufferPy  # type: ignore[misc,assignment]
    unpack = _unpack_py
