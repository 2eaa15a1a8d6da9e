"""Schedule expansion: pure functions from a (verified) schedule body to concrete occurrences in UTC.

Body format (docs/protocol.md):
    {"version": int, "timezone": "Asia/Ho_Chi_Minh",
     "slots": [{"id", "weekdays": [1..7], "start": "05:30", "duration": seconds, "level": "normal"|"priority",
                "volume": int|null, "playlist": [{content_id, sha256, length, duration, codec, url}]
                                    OR "live": {"url", "codec"}}],
     "once":  [{"id", "at": RFC3339, "duration", "level", "volume", "playlist" | "live"}]}

Rules:
  * Weekdays are ISO (1 = Monday) and refer to the local date the slot STARTS on; a slot may cross
    midnight (it then ends on the next local date).
  * Local times are in the body's "timezone" (falling back to the node's). In a zone with summer time a
    start inside the spring-forward gap happens at the same UTC instant as the skipped wall-clock time
    (02:30 CET = 03:30 CEST); a start inside the repeated autumn hour happens once, the first time.
  * `duration` is elapsed seconds: a slot over a DST change lasts exactly `duration`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from node.errors import RemoteDataError

DEFAULT_TZ = "Asia/Ho_Chi_Minh"
MAX_SLOTS = 200
MAX_ONCE = 200
MAX_PLAYLIST = 200
MAX_DURATION = 24 * 3600
LEVELS = ("normal", "priority")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
UTC = dt.timezone.utc


@dataclass(frozen=True)
class Occurrence:
    slot_id: str
    starts_at: dt.datetime  # aware, UTC
    ends_at: dt.datetime  # aware, UTC
    level: str  # "normal" | "priority"
    volume: int | None
    playlist: tuple[dict, ...] | None  # exactly one of playlist / live is set
    live: dict | None

    @property
    def occurrence_id(self) -> str:
        """Stable id of this one occurrence (slot id + UTC start), e.g. for de-duplication."""
        return f"{self.slot_id}@{self.starts_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _bad(detail: str) -> RemoteDataError:
    return RemoteDataError("schedule_invalid", detail)


def _zone(body: dict, tz_name: str | None) -> ZoneInfo:
    name = body.get("timezone") or tz_name or DEFAULT_TZ
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _bad(f"unknown timezone {name!r}") from exc


def _content(entry: dict, where: str) -> tuple[tuple[dict, ...] | None, dict | None]:
    playlist, live = entry.get("playlist"), entry.get("live")
    if (playlist is None) == (live is None):
        raise _bad(f"{where}: needs exactly one of 'playlist' or 'live'")
    if playlist is not None:
        if not isinstance(playlist, list) or not playlist or len(playlist) > MAX_PLAYLIST:
            raise _bad(f"{where}: playlist must be a list of 1..{MAX_PLAYLIST} items")
        for item in playlist:
            if not isinstance(item, dict) or not isinstance(item.get("sha256"), str):
                raise _bad(f"{where}: every playlist item needs a sha256")
        return tuple(playlist), None
    if not isinstance(live, dict) or not isinstance(live.get("url"), str):
        raise _bad(f"{where}: live needs a url")
    return None, live


def _common(entry: dict, where: str) -> tuple[str, int, str, int | None]:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
        raise _bad(f"{where}: needs a string id")
    duration = entry.get("duration")
    if not isinstance(duration, int) or isinstance(duration, bool) or not 0 < duration <= MAX_DURATION:
        raise _bad(f"{where}: duration must be 1..{MAX_DURATION} seconds")
    level = entry.get("level", "normal")
    if level not in LEVELS:
        raise _bad(f"{where}: level must be one of {LEVELS}")
    volume = entry.get("volume")
    bad_volume = not isinstance(volume, int) or isinstance(volume, bool) or not 0 <= volume <= 100
    if volume is not None and bad_volume:
        raise _bad(f"{where}: volume must be null or 0..100")
    return entry["id"], duration, level, volume


def expand(schedule_body: dict, tz_name: str | None, start: dt.datetime,
           end: dt.datetime) -> list[Occurrence]:
    """Every occurrence that STARTS in [start, end), sorted by start. start/end must be aware.
    Raises RemoteDataError("schedule_invalid") for a malformed body."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    zone = _zone(schedule_body, tz_name)
    slots, once = schedule_body.get("slots", []), schedule_body.get("once", [])
    if not isinstance(slots, list) or len(slots) > MAX_SLOTS:
        raise _bad(f"slots must be a list of at most {MAX_SLOTS}")
    if not isinstance(once, list) or len(once) > MAX_ONCE:
        raise _bad(f"once must be a list of at most {MAX_ONCE}")
    out: list[Occurrence] = []
    first_day = start.astimezone(zone).date() - dt.timedelta(days=1)
    last_day = end.astimezone(zone).date() + dt.timedelta(days=1)
    for index, slot in enumerate(slots):
        where = f"slots[{index}]"
        slot_id, duration, level, volume = _common(slot, where)
        playlist, live = _content(slot, where)
        weekdays = slot.get("weekdays")
        if not isinstance(weekdays, list) or not weekdays or any(
                not isinstance(d, int) or not 1 <= d <= 7 for d in weekdays):
            raise _bad(f"{where}: weekdays must be a list of 1..7 (ISO, 1 = Monday)")
        match = _HHMM.match(str(slot.get("start")))   # str(None) fails the pattern too
        if not match:
            raise _bad(f"{where}: start must be HH:MM")
        at = dt.time(int(match.group(1)), int(match.group(2)))
        day = first_day
        while day <= last_day:
            if day.isoweekday() in weekdays:
                begins = dt.datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
                if start <= begins < end:
                    out.append(Occurrence(slot_id, begins, begins + dt.timedelta(seconds=duration),
                                          level, volume, playlist, live))
            day += dt.timedelta(days=1)
    for index, entry in enumerate(once):
        where = f"once[{index}]"
        once_id, duration, level, volume = _common(entry, where)
        playlist, live = _content(entry, where)
        try:
            begins = dt.datetime.fromisoformat(str(entry.get("at")))
        except ValueError as exc:
            raise _bad(f"{where}: at must be an RFC 3339 time") from exc
        if begins.tzinfo is None:
            raise _bad(f"{where}: at needs a UTC offset")
        begins = begins.astimezone(UTC)
        if start <= begins < end:
            out.append(Occurrence(once_id, begins, begins + dt.timedelta(seconds=duration),
                                  level, volume, playlist, live))
    out.sort(key=lambda occ: (occ.starts_at, occ.slot_id))
    return out


def _overlapping(schedule_body: dict, tz_name: str | None, start: dt.datetime,
                 end: dt.datetime) -> list[Occurrence]:
    """Occurrences that overlap [start, end): those starting up to MAX_DURATION before start."""
    early = expand(schedule_body, tz_name, start - dt.timedelta(seconds=MAX_DURATION), end)
    return [occ for occ in early if occ.ends_at > start]


def active_at(schedule_body: dict, tz_name: str | None, now: dt.datetime) -> Occurrence | None:
    """The occurrence that should be on air at `now` (after a restart too). When slots overlap, a
    priority slot wins over a normal one, then the one that started last."""
    running = [occ for occ in _overlapping(schedule_body, tz_name, now, now + dt.timedelta(microseconds=1))
               if occ.starts_at <= now]
    if not running:
        return None
    return max(running, key=lambda occ: (occ.level == "priority", occ.starts_at))


MAX_MISSED = 256                         # records for one clock gap, newest kept
MAX_MISSED_LOOKBACK = dt.timedelta(days=31)


def missed_between(schedule_body: dict, tz_name: str | None, since: dt.datetime, now: dt.datetime,
                   started=frozenset()) -> list[Occurrence]:
    """Occurrences that started in [since, now), were not started, and are over at `now`: the ones a
    node without trusted time could not play (one still running at `now` is played, radio-style)."""
    since = max(since, now - MAX_MISSED_LOOKBACK)
    if since >= now:
        return []
    over = [occ for occ in expand(schedule_body, tz_name, since, now)
            if occ.ends_at <= now and occ.occurrence_id not in started]
    return over[-MAX_MISSED:]


def position_in_slot(occurrence: Occurrence, now: dt.datetime) -> float:
    """Seconds since the occurrence started, clamped to [0, duration]."""
    total = (occurrence.ends_at - occurrence.starts_at).total_seconds()
    return min(max((now - occurrence.starts_at).total_seconds(), 0.0), total)


def playlist_position(occurrence: Occurrence, now: dt.datetime) -> tuple[int, float] | None:
    """(playlist index, seconds into that item) that should be playing at `now` if the playlist ran
    from the slot start without gaps; None when the playlist has already finished, when the slot is
    live, or when an item has no usable "duration"."""
    if occurrence.playlist is None:
        return None
    elapsed = position_in_slot(occurrence, now)
    for index, item in enumerate(occurrence.playlist):
        length = item.get("duration")
        if not isinstance(length, (int, float)) or length <= 0:
            return None
        if elapsed < length:
            return index, float(elapsed)
        elapsed -= length
    return None


def needed_content(schedule_body: dict, tz_name: str | None, now: dt.datetime,
                   horizon: dt.timedelta) -> set[str]:
    """sha256 of every playlist item in occurrences overlapping [now, now + horizon): prefetch them and
    pin them in the cache."""
    wanted: set[str] = set()
    for occ in _overlapping(schedule_body, tz_name, now, now + horizon):
        for item in occ.playlist or ():
            wanted.add(item["sha256"])
    return wanted
