"""The audit writer process: turns the daemon's raw records into chained JSON lines on disk.

The daemon (:mod:`dockyard.security.audit_pipe`) sends frames on this process's stdin and reads
acknowledgements on its stdout. A frame is a 4-byte little-endian length and a :mod:`marshal` payload
(``marshal`` because both ends are the same interpreter and it is the cheapest serializer there is: the
point of this process is to keep per-request work off the serving loop):

* daemon → writer: ``(batch, wall, mono, dropped, has_start, shapes, data)``; ``wall``/``mono`` are one
  reading of both clocks, so a record's monotonic end time becomes wall-clock time here; ``dropped`` counts
  records the daemon could not send; ``has_start`` says whether a ``start`` record (one the daemon waits
  for) is among the records. ``shapes`` and ``data`` are the daemon's record buffer, taken
  (:mod:`dockyard.security.audit_records`: the distinct shapes and the records packed in bytes); the
  writer renders the packed records where they are (below), or unpacks them into :data:`Record` tuples.
* writer → daemon: ``(batch, errno, message)``: every batch up to ``batch`` is on disk (``errno`` 0), or
  writing failed. Sent once at start (batch 0: the log is open), after each read that carried a ``start``
  record (those the daemon waits for), and whenever writing fails or recovers.

The process ignores SIGINT, SIGTERM and SIGHUP: it ends when its stdin does (the daemon closed it, or died),
after writing everything it was given, so a signal to the whole service never loses the last records.

The per-record work runs in C (:mod:`dockyard.security._chainfast`, built by setup.py) when it is built:
``_chainfast.render`` takes a chunk of the packed records straight to their chained lines, in one bytes
object that is written as it is. No object is made per record; the shapes' templates (:class:`Formatter`)
are made once per frame. Its output is byte for byte that of the reference path, spelled out in
:func:`_render_py`: unpack, the texts (:func:`_texts_py`), ``dropped_before``, the chain
(``audit._chain_py``) and the join. CPU per record (Writer._take and flush on 2,000-record frames, on
the 2-core machine the daemon shares): ~4 µs with those steps in Python; ~1.3 µs with each step in C but
a tuple, a str and a bytes made per record; ~0.65-0.9 µs with render (~0.45 of it render, most of that
SHA-256, and ~0.25 the write). The whole writer process fed 600,000 records through a pipe (rusage,
startup subtracted, with its reads, rotations and syncs) went from ~1.4-1.7 µs to ~0.95-1.2, of which
~0.4 in the kernel (the writes). While the log fails and its backlog is large, records go the reference
way through ``ChainFile.extend``, which knows which records may be dropped. tests/unit/test_chainfast.py
checks that the C output is identical to the references'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import marshal
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dockyard.security.audit import ChainFile, _chain_py
from dockyard.security.audit_records import RECORD_FIXED, _unpack_py, unpack
from dockyard.security.audit_records import Record as Record
from dockyard.security.audit_records import Shape as Shape

log = logging.getLogger("dockyard.audit")

FRAME = struct.Struct("<I")
RETRY_INTERVAL = 1.0  # seconds between attempts to write out lines kept after a failed write
SYNC_INTERVAL = 1.0  # reads' records reach the disk (fdatasync) within this; start records before their ack
READ_SIZE = 1 << 20
# Records are rendered and written this many at a time, not a whole frame (~2,000 records every 50 ms at
# full load) at once: a chunk's ~45 kB of lines are built and written while still in cache. Measured when
# the writer made objects per record (bench, A/B of the same daemon): ~14% less writer CPU and ~3% more
# GET /_ping throughput on the serving core, whose cache the writer shares; 32 was no better. Measured
# again with render (the writer process fed 600,000 records through a pipe, 8 runs each): whole frames
# took about as much user CPU but ~40% more system CPU (likely the write copying ~700 kB that is no longer
# in cache; it is not allocation: strace shows no more mmap); 512 was no better than 128.
CHUNK = 128

# A record (audit_records.Record) is (shape, request_id, status, bytes, started, ended). The shape is what a
# connection's requests to one path share (audit_records.Shape); the daemon reuses one shape object for
# them, so a frame carries it once and the writer makes its line template once.


def frame(payload: Any) -> bytes:
    """One frame of the pipe protocol."""
    data = marshal.dumps(payload)
    return FRAME.pack(len(data)) + data


def take_frames(buf: bytearray) -> list[Any]:
    """The complete frames at the head of ``buf`` (removed from it), decoded."""
    out = []
    pos = 0
    while len(buf) - pos >= FRAME.size:
        (size,) = FRAME.unpack_from(buf, pos)
        end = pos + FRAME.size + size
        if end > len(buf):
            break
        out.append(marshal.loads(bytes(buf[pos + FRAME.size : end])))
        pos = end
    del buf[:pos]
    return out


def _js(value: str | None) -> str:
    """A JSON string (or null); plain ASCII, the common case, skips the encoder."""
    if value is None:
        return "null"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def _fixed(shape: Shape) -> str:
    """A shape's fixed text: what a record's JSON has between its request id and its status tail."""
    phase, caller, method, path, op, target, decision = shape
    # The method is an HTTP token (the parser accepts no quotes or escapes there); phase and operation are
    # the daemon's own; the caller was made by json.dumps. Path and target are client text.
    fixed = (
        f'","phase":"{phase}","caller":{caller},"method":"{method}","path":{_js(path)},'
        f'"operation":{_js(op)},"target":{_js(target)}'
    )
    if decision is not None:
        verdict, rule, reason = decision
        fixed += f',"decision":"{verdict}","rule":{_js(rule)}'
        if reason:
            fixed += f',"reason":{_js(reason)}'
    return fixed


# A record's text (without the closing brace: the chain adds ``prev``) is _HEAD, the shape's fixed text
# and, for a ``done`` record, _TAIL.
_HEAD = '{"time":"%s.%06dZ","request_id":"%s'
_TAIL = ',"status":%d,"bytes":%d,"duration_ms":%.3f'


def _texts_py(
    records: Sequence[Record], fixed_of: Callable[[Shape], tuple[str, bool]], offset: float
) -> list[str]:
    """Each record's text, in order; ``fixed_of(shape)`` is the shape's fixed text and whether it is a
    ``done`` record (with the status tail), ``offset`` turns the daemon's monotonic times into wall clock.

    The reference for :func:`dockyard.security._chainfast.texts`, which the writer uses when it is built
    (tests/unit/test_chainfast.py compares the two): ~2.6 µs per record here, ~0.2 µs in C.
    """
    by_object: dict[int, str] = {}  # within one frame a shape is one object (see audit_records.unpack)
    second, second_text = -1, ""
    out: list[str] = []
    append = out.append
    for shape, rid, status, nbytes, started, ended in records:
        template = by_object.get(id(shape))
        if template is None:  # one ``%`` per record: a quarter of the cost of building each line anew
            fixed, done = fixed_of(shape)
            template = by_object[id(shape)] = _HEAD + fixed.replace("%", "%%") + (_TAIL if done else "")
        t = offset + ended
        whole = int(t)
        if whole != second:
            second, second_text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        if started is None:
            append(template % (second_text, int((t - whole) * 1e6), rid))
        else:
            append(template % (second_text, int((t - whole) * 1e6), rid, status, nbytes,
                               (ended - started) * 1000))  # fmt: skip
    return out


def _template_of(template: Any) -> tuple[str, bool]:
    """A template of :func:`_render_py` as ``fixed_of`` gives it to :func:`_texts_py`, checked."""
    if not (isinstance(template, tuple) and len(template) == 2 and isinstance(template[0], str)):
        raise TypeError("templates must be (str, bool) tuples")
    return template[0], bool(template[1])


def _index(value: object, what: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"render() {what} must be int, not {type(value).__name__}")
    if not 0 <= value <= sys.maxsize:
        raise ValueError(f"render() {what} out of range")
    return int(value)


def _render_py(
    templates: list[Any] | tuple[Any, ...], data: bytes, pos: int, count: int, head: str, offset: float,
    dropped: int, /,
) -> tuple[bytes, str, int]:  # fmt: skip
    """Up to ``count`` records packed in ``data`` from byte ``pos`` as chained lines, each followed by a
    newline; the new chain head and the position after them.

    What the writer did per chunk before: :func:`~dockyard.security.audit_records.unpack`, the texts
    (``templates[i]`` is the ``(fixed, done)`` of shape ``i``, what :meth:`Formatter._fixed_of` gives), the
    first one with ``"dropped_before"`` when ``dropped`` (as :meth:`ChainFile.extend`), chained from
    ``head`` and joined. The reference for :func:`dockyard.security._chainfast.render`, which makes the
    lines straight from the packed bytes into one buffer (tests/unit/test_chainfast.py compares the two).

    Raises:
        TypeError: an argument of the wrong type; a template that is not a (str, bool) tuple, or whose
            phase does not match its record's.
        ValueError: malformed records (as ``unpack``); ``pos`` past the end; a negative (or beyond
            ``sys.maxsize``) position, count or ``dropped``.
        OverflowError, OSError: a record time that no date has (as :func:`_texts_py`).
        UnicodeEncodeError: a lone surrogate in a template or the head (as ``chain``).
    """
    if not isinstance(templates, (list, tuple)):
        raise TypeError(f"templates must be a list or tuple, not {type(templates).__name__}")
    view = memoryview(data).cast("B")  # TypeError for what is not bytes-like
    pos, count = _index(pos, "pos"), _index(count, "count")
    if not isinstance(head, str):
        raise TypeError(f"render() head must be str, not {type(head).__name__}")
    if not isinstance(offset, (int, float)):
        raise TypeError(f"offset must be a float, not {type(offset).__name__}")
    offset, dropped = float(offset), _index(dropped, "dropped")
    if pos > len(view):
        raise ValueError("render() pos out of range")
    stop, n = pos, 0
    while n < count and stop < len(view):  # the records' ends (unpack below checks them)
        if len(view) - stop < 5:
            raise ValueError("truncated audit record")
        stop, n = stop + RECORD_FIXED + view[stop + 4], n + 1
    if n == 0:
        return b"", head, pos
    bodies = _texts_py(_unpack_py(templates, bytes(view[pos:stop])), _template_of, offset)
    if dropped:
        bodies[0] += f',"dropped_before":{dropped}'
    lines, head = _chain_py(bodies, head)
    return b"".join(line + b"\n" for line in lines), head, stop


try:
    from dockyard.security._chainfast import render as _render
    from dockyard.security._chainfast import texts as _texts
except ImportError:  # the optional extension was not built (see setup.py): the reference loops serve
    _texts = _texts_py
    _render = _render_py


_KEEP_FIXED = 4096  # shapes whose fixed text the Formatter keeps (all dropped when full)
_KEEP_FIXED_CHARS = 2048  # ... and only those this short


class Formatter:
    """Records to JSON texts. Requests of one connection share all but five values (a :data:`Shape`), so
    each shape's fixed text is made once and kept (and given to ``render`` as a frame's templates)."""

    def __init__(self) -> None:
        self._fixed: dict[Shape, tuple[str, bool]] = {}

    def texts(self, records: list[Record], wall: float, mono: float) -> list[str]:
        """Each record's text, in order; ``wall``/``mono`` are one reading of both clocks."""
        return _texts(records, self._fixed_of, wall - mono)

    def templates(self, shapes: list[Shape]) -> tuple[tuple[str, bool], ...]:
        """The ``(fixed, done)`` of each of a frame's shapes: the templates of :func:`_render_py`."""
        return tuple(map(self._fixed_of, shapes))

    def _fixed_of(self, shape: Shape) -> tuple[str, bool]:
        entry = self._fixed.get(shape)
        if entry is None:
            entry = (_fixed(shape), shape[0] == "done")
            # Kept only when short: a path can be 64 KiB of client text, and 4,096 of those would pin
            # 256 MiB here (a long one is made again for each frame it is in, which is cheap).
            if len(entry[0]) <= _KEEP_FIXED_CHARS:
                if len(self._fixed) >= _KEEP_FIXED:
                    self._fixed.clear()
                self._fixed[shape] = entry
        return entry


class Writer:
    """The loop: read frames, chain their records, write them, acknowledge."""

    def __init__(self, chain: ChainFile, rfd: int, wfd: int) -> None:
        self.chain = chain
        self.rfd = rfd
        self.wfd = wfd
        self._buf = bytearray()
        self._format = Formatter()
        self._batch = 0
        self._reported_ok = True

    def run(self) -> None:
        """Serve until stdin ends; then write what is left and close the file."""
        self._ack(None)
        synced = time.monotonic()
        while True:
            timeout = RETRY_INTERVAL if self.chain.pending else SYNC_INTERVAL if self.chain.unsynced else None
            readable, _, _ = select.select([self.rfd], [], [], timeout)
            data = os.read(self.rfd, READ_SIZE) if readable else b""
            durable = self._take(data)
            error = self.chain.flush()
            due = durable or time.monotonic() - synced >= SYNC_INTERVAL
            if error is None and self.chain.unsynced and due:
                error = self.chain.sync()  # a start record is acknowledged only once it is on the disk
                synced = time.monotonic()
            if durable or (error is None) != self._reported_ok:
                self._ack(error)
            if readable and not data:
                break
        self.chain.close()

    def _take(self, data: bytes) -> bool:
        """Chain the records of every complete frame; True when one of them is a ``start`` record."""
        self._buf += data
        durable = False
        chain = self.chain
        for batch, wall, mono, dropped, has_start, shapes, packed in take_frames(self._buf):
            chain.dropped += dropped
            templates = self._format.templates(shapes)
            offset, pos = wall - mono, 0
            while pos < len(packed):
                if chain.shedding:  # records will be dropped: the path that knows which may go
                    self._take_slow(shapes, packed[pos:], wall, mono, has_start)
                    break
                lines, head, pos = _render(templates, packed, pos, CHUNK, chain.head, offset, chain.dropped)
                chain.extend_rendered(lines, head)
                chain.flush()  # errors stay in chain.failure: run() reports them after this
            durable = durable or has_start
            self._batch = batch
        return durable

    def _take_slow(self, shapes: list[Shape], packed: bytes, wall: float, mono: float, starts: bool) -> None:
        """Chain records one text each, with :meth:`ChainFile.extend`: while the log fails and its backlog
        is large, it drops those that are not durable (all but ``start`` records)."""
        records = unpack(shapes, packed)
        for i in range(0, len(records), CHUNK):
            part = records[i : i + CHUNK]
            durable = [rec[4] is None for rec in part] if starts else None
            self.chain.extend(self._format.texts(part, wall, mono), durable)
            self.chain.flush()

    def _ack(self, error: OSError | None) -> None:
        self._reported_ok = error is None
        reply = (
            (self._batch, 0, "") if error is None else (self._batch, error.errno or 5, f"{error.strerror}")
        )
        with contextlib.suppress(OSError):  # the daemon is gone: keep writing what it sent until stdin ends
            os.write(self.wfd, frame(reply))


def main(argv: list[str] | None = None) -> int:
    """Open the log named on the command line and serve the daemon on stdin/stdout."""
    ap = argparse.ArgumentParser(description="dockyard audit writer (started by dockyardd)")
    ap.add_argument("path", type=Path)
    ap.add_argument("--max-bytes", type=int, default=64 << 20)
    ap.add_argument("--max-pending", type=int, default=16 << 20)
    args = ap.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="audit-writer: %(levelname)s %(message)s")
    chain = ChainFile(args.path, args.max_bytes, args.max_pending)
    try:
        chain.open()
    except OSError as exc:
        print(f"audit-writer: cannot open {args.path}: {exc}", file=sys.stderr)
        return 1
    Writer(chain, sys.stdin.fileno(), sys.stdout.fileno()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
