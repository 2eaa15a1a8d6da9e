"""Durations and RFC 3339 times (node/trust/durations.py): every unit, every limit, every message."""

import datetime as dt

import pytest

from node.trust.durations import format_duration, format_time, parse_cli_time, parse_duration, parse_time

UTC = dt.timezone.utc


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("45", 45), ("1.5h", 5400),
    ("  2H ", 7200), ("999999999", 999999999), ("0.000001", 0.000001), ("1.123456s", 1.123456), ("2D", 172800),
])
def test_each_duration_unit_and_digit_limit(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


def test_a_duration_may_be_given_as_a_number():
    assert parse_duration(90) == dt.timedelta(seconds=90)


@pytest.mark.parametrize("text,message", [
    ("1234567890", "not a duration: '1234567890' (use e.g. 90s, 30m, 2h, 7d)"),
    ("1.1234567", "not a duration: '1.1234567' (use e.g. 90s, 30m, 2h, 7d)"),
    ("5 minutes", "not a duration: '5 minutes' (use e.g. 90s, 30m, 2h, 7d)"),
    ("1y", "not a duration: '1y' (use e.g. 90s, 30m, 2h, 7d)"),
    ("-5m", "not a duration: '-5m' (use e.g. 90s, 30m, 2h, 7d)"),
    (".5h", "not a duration: '.5h' (use e.g. 90s, 30m, 2h, 7d)"),
    ("0", "duration must be positive: '0'"),
    ("0.0h", "duration must be positive: '0.0h'"),
])
def test_bad_durations_name_the_text(text, message):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize("seconds,text", [
    (86400, "1d"), (172800, "2d"), (7200, "2h"), (90000, "25h"), (120, "2m"), (3660, "61m"), (90, "90s"),
    (61, "61s"), (0, "0s"), (90.7, "90s"),
])
def test_durations_are_written_in_the_largest_whole_unit(seconds, text):
    assert format_duration(dt.timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("text,expected", [
    ("2026-11-26T05:30:00Z", dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)),
    ("2026-11-26T12:30:00+07:00", dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)),
    ("2026-11-25T22:30:00-07:00", dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)),
    ("2026-11-26T11:00:00+05:30", dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)),
    ("2026-11-26T05:30:00+00:00", dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)),
    ("2026-11-26T05:30:00+23:59", dt.datetime(2026, 11, 25, 5, 31, tzinfo=UTC)),
    ("2026-11-26T05:30:00.5Z", dt.datetime(2026, 11, 26, 5, 30, 0, 500000, tzinfo=UTC)),
    ("2026-11-26T05:30:00.1234567Z", dt.datetime(2026, 11, 26, 5, 30, 0, 123456, tzinfo=UTC)),
    ("2026-11-26T05:30:59.000001Z", dt.datetime(2026, 11, 26, 5, 30, 59, 1, tzinfo=UTC)),
])
def test_rfc3339_times_are_read_to_the_microsecond_in_utc(text, expected):
    value = parse_time(text)
    assert value == expected and value.tzinfo is UTC


@pytest.mark.parametrize("text,message", [
    ("2026-11-26T05:30:00", "not an RFC 3339 time: '2026-11-26T05:30:00' (want e.g. 2026-11-26T05:30:00Z)"),
    ("2026-11-26T05:30:00.1234567890Z",
     "not an RFC 3339 time: '2026-11-26T05:30:00.1234567890Z' (want e.g. 2026-11-26T05:30:00Z)"),
    ("x" * 50, f"not an RFC 3339 time: {'x' * 40!r} (want e.g. 2026-11-26T05:30:00Z)"),
    ("2026-11-26T05:30:00+24:00", "bad UTC offset in '2026-11-26T05:30:00+24:00'"),
    ("2026-11-26T05:30:00-05:60", "bad UTC offset in '2026-11-26T05:30:00-05:60'"),
    ("2026-02-30T00:00:00Z", "impossible date/time '2026-02-30T00:00:00Z': day is out of range for month"),
    ("2026-11-26T24:00:00Z", "impossible date/time '2026-11-26T24:00:00Z': hour must be in 0..23"),
])
def test_bad_times_name_what_is_wrong(text, message):
    with pytest.raises(ValueError) as info:
        parse_time(text)
    assert str(info.value) == message


@pytest.mark.parametrize("value", [None, 1764135000, b"2026-11-26T05:30:00Z"])
def test_a_time_must_be_a_string(value):
    with pytest.raises(ValueError) as info:
        parse_time(value)
    assert str(info.value) == "time must be a string"


def test_times_are_written_in_whole_utc_seconds():
    plus7 = dt.timezone(dt.timedelta(hours=7))
    assert format_time(dt.datetime(2026, 11, 26, 12, 30, 59, 999999, tzinfo=plus7)) == "2026-11-26T05:30:59Z"
    with pytest.raises(ValueError) as info:
        format_time(dt.datetime(2026, 11, 26, 5, 30))
    assert str(info.value) == "naive datetime: pass an aware UTC time"


def test_people_may_type_now_or_iso_times_without_an_offset():
    before = dt.datetime.now(UTC)
    now = parse_cli_time(" NOW ")
    assert before <= now <= dt.datetime.now(UTC) and now.tzinfo is UTC
    assert parse_cli_time("2026-11-26T05:30:00Z") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    assert parse_cli_time(" 2026-11-26 05:30 ") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    assert parse_cli_time("2026-11-26 12:30+07:00") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    assert parse_cli_time("2026-11-26 12:30+07:00").tzinfo is UTC
    with pytest.raises(ValueError):
        parse_cli_time("tomorrow")


def test_a_cli_time_without_an_offset_is_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Ho_Chi_Minh")
    time.tzset()
    try:
        assert parse_cli_time("2026-11-26 05:30") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
        assert parse_cli_time("2026-11-26T12:30:00+07:00") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
        assert parse_time("2026-11-26T05:30:00Z") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
        assert format_time(dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)) == "2026-11-26T05:30:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()
