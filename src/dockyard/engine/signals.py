"""Signal names as Docker accepts them: ``SIGKILL``, ``KILL``, ``9``."""

from __future__ import annotations

import signal

from dockyard.errors import InvalidParameter

_MAX_SIGNAL = 64


def parse_signal(value: str | int | None, default: int = signal.SIGKILL) -> int:
    """A signal number from Docker's forms; ``InvalidParameter`` for anything else."""
    if value is None or value == "":
        return default
    if isinstance(value, int) or value.isdigit():
        number = int(value)
        if 0 < number <= _MAX_SIGNAL:
            return number
        raise InvalidParameter(f"Invalid signal: {value}")
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base = signal.SIGRTMIN if name.startswith("SIGRTMIN") else signal.SIGRTMAX
        try:
            offset = int(name[9:])
        except ValueError:
            raise InvalidParameter(f"Invalid signal: {value}") from None
        return int(base + offset if "+" in name else base - offset)
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidParameter(f"Invalid signal: {value}") from None
