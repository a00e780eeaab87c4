# Types of the C extension _chainfast.c (the reference implementations: audit._chain_py,
# audit_writer._texts_py, audit_writer._render_py, audit_records.RecordBufferPy and audit_records._unpack_py).
from collections.abc import Callable, Sequence
from typing import Any

def chain(bodies: list[str], head: str, /) -> tuple[list[bytes], str]: ...
def render(
    templates: list[Any] | tuple[Any, ...],
    data: bytes,
    pos: int,
    count: int,
    head: str,
    offset: float,
    dropped: int,
    /,
) -> tuple[bytes, str, int]: ...
def texts(
    records: Sequence[tuple[Any, ...]], fixed_of: Callable[[Any], tuple[str, bool]], offset: float, /
) -> list[str]: ...

class RecordBuffer:
    @property
    def starts(self) -> int: ...
    def __len__(self) -> int: ...
    def add(
        self,
        shape: Any,
        rid: str,
        status: int | None,
        nbytes: int | None,
        started: float | None,
        ended: float | None = None,
        /,
    ) -> None: ...
    def take(self) -> tuple[list[Any], bytes]: ...

def unpack(
    shapes: list[Any] | tuple[Any, ...], data: bytes, /
) -> list[tuple[Any, str, int | None, int | None, float | None, float]]: ...
