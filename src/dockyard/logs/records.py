"""Records of conmon's k8s-file log format and an incremental parser for them.

conmon (``src/ctr_logging.c``) writes one record per line::

    <RFC3339Nano local time> <stdout|stderr> <F|P> <content>\\n

``F`` means the container wrote a newline: the record's own ``\\n`` is that newline. ``P`` means the output
ended without one (a long line split at conmon's buffer size, or a prompt): the ``\\n`` was added by conmon
and the next record of the same stream continues the line. Records of the other stream may come between
the pieces, so pieces are joined per stream. A joined line takes the time of its last piece, as podman's
reader does. Content never holds a newline, so the file splits cleanly on ``\\n``.

The parser works on large byte blocks with ``bytes.split``; the only per-line Python left is building
the record itself. Timestamps are parsed with a regular expression and a cached day number, and the last
timestamp is remembered because conmon stamps every line of one read with the same time.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass

STDOUT = 1
STDERR = 2

STREAM_IDS: dict[bytes, int] = {b"stdout": STDOUT, b"stderr": STDERR}

_TS_RE = re.compile(rb"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})\Z")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of container output.

    Attributes:
        stream: 1 for stdout, 2 for stderr.
        data: The line, with its trailing newline unless the output ended without one.
        timestamp: The time as conmon wrote it (RFC3339Nano with the host's local offset).
        time_ns: The same time in nanoseconds since the Unix epoch.
    """

    stream: int
    data: bytes
    timestamp: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which records a reader keeps; times are inclusive bounds in Unix nanoseconds."""

    stdout: bool = True
    stderr: bool = True
    since_ns: int | None = None
    until_ns: int | None = None

    def wants(self, stream: int) -> bool:
        """Tell whether records of ``stream`` (1 or 2) are asked for."""
        return self.stdout if stream == STDOUT else self.stderr if stream == STDERR else False


@functools.lru_cache(maxsize=4096)
def _day_seconds(day: bytes) -> int:
    return (datetime.date.fromisoformat(day.decode()).toordinal() - _EPOCH_ORDINAL) * 86400


def _slow_ns(ts: bytes) -> int:
    m = _TS_RE.match(ts)
    if m is None:
        raise ValueError(f"bad timestamp {ts!r}")
    day, hh, mm, ss, frac, tz = m.groups()
    secs = _day_seconds(day) + int(hh) * 3600 + int(mm) * 60 + int(ss)
    if tz not in (b"Z", b"z"):
        offset = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        secs -= offset if tz[:1] == b"+" else -offset
    nanos = int(frac.ljust(9, b"0")) if frac else 0
    return secs * _NS + nanos


def rfc3339_to_ns(ts: bytes) -> int:
    """Convert an RFC3339 timestamp with seconds (fraction optional) to Unix nanoseconds.

    Args:
        ts: The timestamp as ASCII bytes, e.g. ``b"2024-01-02T03:04:05.123456789+01:00"``.

    Returns:
        Nanoseconds since the Unix epoch.

    Raises:
        ValueError: ``ts`` is not such a timestamp.
    """
    return _slow_ns(ts)


def parse_head(line: bytes) -> tuple[int, bool, bytes, bytes] | None:
    """Split one record line (without its newline) into stream, full flag, timestamp and content.

    Returns None for a line that is not a record (garbage is skipped, never fatal). The timestamp is
    checked later, only for records a reader keeps.
    """
    parts = line.split(b" ", 3)
    if len(parts) != 4:
        return None
    ts, name, flag, content = parts
    stream = STREAM_IDS.get(name)
    if stream is None or flag not in (b"F", b"P"):
        return None
    return stream, flag == b"F", ts, content


class RecordParser:
    """Turns k8s-file bytes, fed in blocks of any size, into joined and filtered records.

    Records later than ``until_ns`` are dropped and raise the ``past_until`` flag, so a follower knows it
    may stop; records before ``since_ns`` and of unwanted streams are dropped silently.
    """

    def __init__(self, log_filter: LogFilter) -> None:
        self._filter = log_filter
        self._lo = log_filter.since_ns if log_filter.since_ns is not None else -(1 << 80)
        self._hi = log_filter.until_ns if log_filter.until_ns is not None else 1 << 80
        self._rest = b""
        self._pending: dict[int, list[bytes]] = {}
        self._pending_ts: dict[int, bytes] = {}
        self._last: tuple[bytes, int, str] = (b"", 0, "")
        self._second: tuple[bytes, bytes, int] = (b"", b"", 0)  # prefix, zone, ns of that second
        self.past_until = False

    def reset(self) -> None:
        """Forget buffered bytes and unfinished lines (the file was truncated)."""
        self._rest = b""
        self._pending.clear()
        self._pending_ts.clear()

    def drop_rest(self) -> None:
        """Forget an unterminated tail of the current file (the file was replaced)."""
        self._rest = b""

    def feed(self, chunk: bytes) -> list[LogRecord]:
        """Parse ``chunk`` (continuing the previous one) and return the completed records it holds."""
        data = self._rest + chunk if self._rest else chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        out: list[LogRecord] = []
        wants = (False, self._filter.stdout, self._filter.stderr)
        pending, ids, lo, hi = self._pending, STREAM_IDS, self._lo, self._hi
        last_ts, last_ns, last_str = self._last
        for line in lines:
            parts = line.split(b" ", 3)
            if len(parts) != 4:
                continue
            ts, name, flag, content = parts
            stream = ids.get(name, 0)
            if not wants[stream]:
                continue
            if flag != b"F":
                if flag == b"P":
                    pending.setdefault(stream, []).append(content)
                    self._pending_ts[stream] = ts
                continue
            pieces = pending.pop(stream, None) if pending else None
            body = b"".join((*pieces, content, b"\n")) if pieces else content + b"\n"
            if ts != last_ts:
                stamp = self._stamp(ts)
                if stamp is None:
                    continue
                last_ts, (last_ns, last_str) = ts, stamp
            if last_ns < lo:
                continue
            if last_ns > hi:
                self.past_until = True
                continue
            out.append(LogRecord(stream, body, last_str, last_ns))
        self._last = (last_ts, last_ns, last_str)
        return out

    def flush(self) -> list[LogRecord]:
        """Return lines left unfinished (output that ended without a newline), with the last piece's time."""
        out: list[LogRecord] = []
        for stream in sorted(self._pending):
            stamp = self._stamp(self._pending_ts.get(stream, b""))
            if stamp is None or stamp[0] < self._lo:
                continue
            if stamp[0] > self._hi:
                self.past_until = True
                continue
            out.append(LogRecord(stream, b"".join(self._pending[stream]), stamp[1], stamp[0]))
        self._pending.clear()
        self._pending_ts.clear()
        return out

    def _stamp(self, ts: bytes) -> tuple[int, str] | None:
        """Parse a record's time; conmon's fixed layout reuses the parsed second of the previous record."""
        prefix, zone, second_ns = self._second
        if len(ts) == 35 and ts[:19] == prefix and ts[29:] == zone and ts[20:29].isdigit():
            return second_ns + int(ts[20:29]), ts.decode("ascii")
        try:
            ns = rfc3339_to_ns(ts)
        except ValueError:
            return None
        if len(ts) == 35:
            self._second = (ts[:19], ts[29:], ns - ns % _NS)
        return ns, ts.decode("ascii")
