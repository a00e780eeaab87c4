"""Docker's since/until values and timestamp printing."""

from __future__ import annotations

import datetime

import pytest

from dockyard.errors import InvalidParameter
from dockyard.logs.records import LogRecord
from dockyard.logs.timestamps import docker_timestamp, format_ns, parse_docker_time, parse_log_window

NS = 10**9
NOW = 1_700_000_000 * NS


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000", 1_700_000_000 * NS),
        ("1700000000.123456789", 1_700_000_000 * NS + 123_456_789),
        ("1700000000.5", 1_700_000_000 * NS + 500_000_000),
        ("1700000000.1234567891", 1_700_000_000 * NS + 123_456_789),
        ("0", 0),
        ("10m", NOW - 600 * NS),
        ("1h30m", NOW - 5400 * NS),
        ("1.5s", NOW - 1_500_000_000),
        ("250ms", NOW - 250_000_000),
        ("-5s", NOW + 5 * NS),
        ("2023-11-14T22:13:20Z", 1_700_000_000 * NS),
        ("2023-11-14T22:13:20.25Z", 1_700_000_000 * NS + 250_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000 * NS),
        ("2023-11-14T22:13Z", 1_699_999_980 * NS),
        ("2023-11-14T22Z", 1_699_999_200 * NS),
        ("2023-11-14Z", 1_699_920_000 * NS),
    ],
)
def test_parse_docker_time(value: str, expected: int) -> None:
    assert parse_docker_time(value, NOW) == expected


def test_dates_without_zone_are_local_time() -> None:
    local = datetime.datetime(2023, 11, 14, 22, 13, 20).timestamp()
    assert parse_docker_time("2023-11-14T22:13:20", NOW) == int(local) * NS
    midnight = datetime.datetime(2023, 11, 14).timestamp()
    assert parse_docker_time("2023-11-14", NOW) == int(midnight) * NS


@pytest.mark.parametrize(
    "value", ["yesterday", "10x", "2023-13-45", "1.2.3", "", "12abc", "2023-11-14T25:00:00Z"]
)
def test_bad_values_are_invalid_parameters(value: str) -> None:
    with pytest.raises(InvalidParameter, match="failed to parse value as time or duration"):
        parse_docker_time(value, NOW)


def test_log_window() -> None:
    assert parse_log_window(None, None, NOW) == (None, None)
    assert parse_log_window("", "0", NOW) == (None, None)
    assert parse_log_window("0", "", NOW) == (None, None)
    assert parse_log_window("1m", "1700000000", NOW) == (NOW - 60 * NS, NOW)


def test_docker_timestamp_is_utc_with_nine_digits() -> None:
    rec = LogRecord(1, b"x\n", "2023-11-14T23:13:20.000000500+01:00", 1_700_000_000 * NS + 500)
    assert docker_timestamp(rec) == "2023-11-14T22:13:20.000000500Z"
    assert format_ns(0) == "1970-01-01T00:00:00.000000000Z"
