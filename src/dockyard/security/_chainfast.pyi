# Types of the C extension _chainfast.c (the reference implementations: audit._chain_py and
# audit_writer._texts_py).
from collections.abc import Callable, Sequence
from typing import Any

def chain(bodies: list[str], head: str, /) -> tuple[list[bytes], str]: ...
def texts(
    records: Sequence[tuple[Any, ...]], fixed_of: Callable[[Any], tuple[str, bool]], offset: float, /
) -> list[str]: ...
