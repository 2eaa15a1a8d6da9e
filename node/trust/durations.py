"""Durations ("90s", "30m", "2h", "7d") and RFC 3339 UTC timestamps, strictly parsed."""

from __future__ import annotations

import datetime as dt
import re

UTC = dt.timezone.utc

_DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,6})?)([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# RFC 3339 "date-time" with a mandatory offset; upper-case T and Z only (what we emit).
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)


def parse_duration(text: str) -> dt.timedelta:
    """'90s', '30m', '2h', '7d', '1w' or bare seconds ('45'). ValueError for anything else."""
    match = _DURATION.match(str(text).strip().lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 7d)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 -> aware UTC datetime. ValueError names what is wrong."""
    if not isinstance(text, str):
        raise ValueError("time must be a string")
    match = _RFC3339.match(text)
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r} (want e.g. 2026-11-26T05:30:00Z)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset == "Z":
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:])
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        value = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
    except ValueError as exc:
        raise ValueError(f"impossible date/time {text!r}: {exc}") from None
    return value.astimezone(UTC)


def format_time(value: dt.datetime) -> str:
    """Aware datetime -> '2026-11-26T05:30:00Z' (whole seconds, UTC)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")   # %S drops the microseconds


def parse_cli_time(text: str) -> dt.datetime:
    """Looser for people: ISO 8601 with or without offset (no offset means UTC), or 'now'.
    (Python 3.11's fromisoformat reads every RFC 3339 time parse_time reads, 'Z' included.)"""
    if text.strip().lower() == "now":
        return dt.datetime.now(UTC)
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
