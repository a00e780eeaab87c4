"""Docker's ``since``/``until`` values and the timestamps Docker prints.

The docker CLI turns ``--since 10m`` or ``--since 2024-01-02`` into Unix seconds (``"1700000000.000000000"``)
before sending (``api/types/time.GetTimestamp``); docker-py sends integers. We accept every form the CLI
accepts, so curl users and other clients get the same meaning: Go durations relative to now, RFC3339
dates with or without time, zone and fraction (without a zone: local time), and Unix seconds with an
optional fraction.
"""

from __future__ import annotations

import datetime
import re
import time

from dockyard.errors import InvalidParameter
from dockyard.logs.records import LogRecord

__all__ = ["docker_timestamp", "format_ns", "parse_docker_time", "parse_log_window"]

_NS = 1_000_000_000
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # Go accepts both micro signs (U+00B5, U+03BC)
    "μs": 1_000,
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
}
_DURATION_RE = re.compile(r"([+-]?)((?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)\Z")
_DURATION_PART_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIX_RE = re.compile(r"(-?\d+)(?:\.(\d+))?\Z")
_DATE_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"([Zz]|[+-]\d{2}:\d{2})?\Z"
)


def _duration_ns(value: str) -> int | None:
    m = _DURATION_RE.match(value)
    if m is None:
        return None
    total = 0
    for number, unit in _DURATION_PART_RE.findall(m.group(2)):
        whole, _, frac = number.partition(".")
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    return -total if m.group(1) == "-" else total


def _date_ns(value: str) -> int | None:
    m = _DATE_RE.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    tz: datetime.tzinfo | None = None
    if zone in ("Z", "z"):
        tz = datetime.UTC
    elif zone:
        minutes = int(zone[1:3]) * 60 + int(zone[4:6])
        tz = datetime.timezone(datetime.timedelta(minutes=-minutes if zone[0] == "-" else minutes))
    try:
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz
        )
    except ValueError:
        return None
    # A naive datetime's timestamp() uses the local zone, as the CLI's ParseInLocation does.
    seconds = int(moment.timestamp())
    return seconds * _NS + (int(frac.ljust(9, "0")) if frac else 0)


def _unix_ns(value: str) -> int | None:
    m = _UNIX_RE.match(value)
    if m is None:
        return None
    seconds, frac = m.groups()
    nanos = int(frac[:9].ljust(9, "0")) if frac else 0
    return int(seconds) * _NS + nanos


def parse_docker_time(value: str, now_ns: int) -> int:
    """Parse a Docker ``since``/``until`` value into Unix nanoseconds.

    Args:
        value: Unix seconds (``"1700000000.5"``), an RFC3339 date or date-time, or a Go duration
            (``"10m"``, ``"1h30m"``) meaning that long before ``now_ns``.
        now_ns: The reference time for durations, in Unix nanoseconds.

    Returns:
        The time in Unix nanoseconds.

    Raises:
        InvalidParameter: ``value`` is none of these forms.
    """
    value = value.strip()
    if value != "0" and (duration := _duration_ns(value)) is not None:
        return now_ns - duration
    parsed = _date_ns(value) if "-" in value[1:] else _unix_ns(value)
    if parsed is None:
        raise InvalidParameter(f'failed to parse value as time or duration: "{value}"')
    return parsed


def parse_log_window(since: str | None, until: str | None, now_ns: int) -> tuple[int | None, int | None]:
    """Turn the ``since``/``until`` query values of a logs request into an inclusive window.

    Empty values mean no bound; ``until=0`` means no bound as in dockerd, ``since=0`` means from the start.

    Raises:
        InvalidParameter: a value cannot be parsed.
    """
    since_ns = parse_docker_time(since, now_ns) if since else None
    until_ns = parse_docker_time(until, now_ns) if until and until.strip() != "0" else None
    return (since_ns or None), until_ns


def format_ns(time_ns: int) -> str:
    """Format Unix nanoseconds as Docker prints them: UTC, nine fraction digits, ``Z``."""
    seconds, nanos = divmod(time_ns, _NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def docker_timestamp(rec: LogRecord) -> str:
    """Return the record's time in Docker's ``timestamps=1`` form (``2024-01-02T03:04:05.123456789Z``)."""
    return format_ns(rec.time_ns)
