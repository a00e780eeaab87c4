"""What the test_chainfast*.py files share: the C extension (a failure, not a skip, when it is not built),
record shapes and records, and filling the C buffer and its reference alike."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

from dockyard.security.audit_records import RecordBufferPy
from dockyard.security.audit_writer import Record, Shape, _fixed


def load_chainfast() -> ModuleType:
    """The extension; fails the test module that calls it (at collection) when it is not built."""
    try:
        return importlib.import_module("dockyard.security._chainfast")
    except ImportError as exc:  # no skip: CI builds it, and without it the writer is ~8x slower
        pytest.fail(
            f"the C extension dockyard.security._chainfast is not built ({exc}); build it with "
            "`.venv/bin/pip install --no-deps -e .` (needs gcc, python3-dev and libssl-dev)"
        )


fast = load_chainfast()
CALLER = '{"transport":"unix","uid":0,"gid":0,"pid":1234,"user":"root","group":"root","groups":["root"]}'
HOSTILE = ['/a"b', "/back\\slash", "/ctl\x00\x01\x1f\x7f", "/pct%s%d%%", "/ünï/κόσμε", "/emoji\U0001f600", ""]


def _fixed_of(shape: Shape) -> tuple[str, bool]:
    return _fixed(shape), shape[0] == "done"


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
