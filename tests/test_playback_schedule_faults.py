"""The schedule expander one fault at a time (exact reason and detail), every limit at its value and
one past, the time zone fallbacks, and the instants where a slot starts and ends being on air."""

from __future__ import annotations

import datetime as dt

import pytest

from node.errors import RemoteDataError
from node.playback.schedule import MAX_PLAYLIST, MAX_SLOTS, active_at, expand

UTC = dt.timezone.utc
DAY_START = dt.datetime(2026, 11, 23, tzinfo=UTC)        # a Monday
WEEK = (DAY_START - dt.timedelta(days=1), DAY_START + dt.timedelta(days=7))
TRACK = {"content_id": "c1", "sha256": "1" * 64, "length": 1000, "duration": 600, "codec": "opus"}


def slot(**changes):
    entry = {"id": "sang", "weekdays": [1], "start": "05:30", "duration": 1800, "level": "normal", "volume": 80,
             "playlist": [TRACK]}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not _DROP}


def once(**changes):
    entry = {"id": "hop", "at": "2026-11-24T19:00:00+07:00", "duration": 600, "playlist": [TRACK]}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not _DROP}


_DROP = object()


def body(slots=(), onces=(), **fields):
    doc = {"version": 3, "timezone": "UTC", "slots": list(slots), "once": list(onces)}
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not _DROP}


def fault(schedule, tz_name=None) -> str:
    with pytest.raises(RemoteDataError) as info:
        expand(schedule, tz_name, *WEEK)
    assert info.value.reason == "schedule_invalid"
    return info.value.detail


@pytest.mark.parametrize("schedule,detail", [
    (body([slot(id=_DROP)]), "slots[0]: needs a string id"),
    (body([slot(id="")]), "slots[0]: needs a string id"),
    (body([slot(id=5)]), "slots[0]: needs a string id"),
    (body(["sang"]), "slots[0]: needs a string id"),
    (body([slot(), slot(duration=0)]), "slots[1]: duration must be 1..86400 seconds"),
    (body([slot(duration=86401)]), "slots[0]: duration must be 1..86400 seconds"),
    (body([slot(duration=True)]), "slots[0]: duration must be 1..86400 seconds"),
    (body([slot(duration=60.0)]), "slots[0]: duration must be 1..86400 seconds"),
    (body([slot(level="emergency")]), "slots[0]: level must be one of ('normal', 'priority')"),
    (body([slot(volume=101)]), "slots[0]: volume must be null or 0..100"),
    (body([slot(volume=-1)]), "slots[0]: volume must be null or 0..100"),
    (body([slot(volume=True)]), "slots[0]: volume must be null or 0..100"),
    (body([slot(volume="80")]), "slots[0]: volume must be null or 0..100"),
    (body([slot(playlist=_DROP)]), "slots[0]: needs exactly one of 'playlist' or 'live'"),
    (body([slot(live={"url": "https://r.example/x"})]), "slots[0]: needs exactly one of 'playlist' or 'live'"),
    (body([slot(playlist=[])]), "slots[0]: playlist must be a list of 1..200 items"),
    (body([slot(playlist={"a": TRACK})]), "slots[0]: playlist must be a list of 1..200 items"),
    (body([slot(playlist=[TRACK] * 201)]), "slots[0]: playlist must be a list of 1..200 items"),
    (body([slot(playlist=[TRACK, "c2"])]), "slots[0]: every playlist item needs a sha256"),
    (body([slot(playlist=[{**TRACK, "sha256": None}])]), "slots[0]: every playlist item needs a sha256"),
    (body([slot(playlist=_DROP, live="https://r.example/x")]), "slots[0]: live needs a url"),
    (body([slot(playlist=_DROP, live={"codec": "mp3"})]), "slots[0]: live needs a url"),
    (body([slot(weekdays=[])]), "slots[0]: weekdays must be a list of 1..7 (ISO, 1 = Monday)"),
    (body([slot(weekdays=[0])]), "slots[0]: weekdays must be a list of 1..7 (ISO, 1 = Monday)"),
    (body([slot(weekdays=[8])]), "slots[0]: weekdays must be a list of 1..7 (ISO, 1 = Monday)"),
    (body([slot(weekdays="1")]), "slots[0]: weekdays must be a list of 1..7 (ISO, 1 = Monday)"),
    (body([slot(start="24:00")]), "slots[0]: start must be HH:MM"),
    (body([slot(start=_DROP)]), "slots[0]: start must be HH:MM"),
    (body(onces=[once(id=_DROP)]), "once[0]: needs a string id"),
    (body(onces=[once(duration=_DROP)]), "once[0]: duration must be 1..86400 seconds"),
    (body(onces=[once(playlist=_DROP)]), "once[0]: needs exactly one of 'playlist' or 'live'"),
    (body(onces=[once(at=_DROP)]), "once[0]: at must be an RFC 3339 time"),
    (body(onces=[once(at="tomorrow")]), "once[0]: at must be an RFC 3339 time"),
    (body(onces=[once(at="2026-11-24T19:00:00")]), "once[0]: at needs a UTC offset"),
    ({**body(), "slots": "sang"}, "slots must be a list of at most 200"),
    (body([slot()] * 201), "slots must be a list of at most 200"),
    ({**body(), "once": "hop"}, "once must be a list of at most 200"),
    (body(onces=[once()] * 201), "once must be a list of at most 200"),
    (body(timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
])
def test_each_schedule_fault_names_the_entry_and_the_field(schedule, detail):
    assert fault(schedule) == detail


def test_schedule_limits_are_inclusive_and_optional_fields_default():
    occurrences = expand(body([slot(duration=86400, volume=0, playlist=[TRACK] * MAX_PLAYLIST)] * MAX_SLOTS), None,
                         *WEEK)
    assert len(occurrences) == MAX_SLOTS and occurrences[0].volume == 0
    (only,) = expand(body([slot(duration=1, volume=100)]), None, *WEEK)
    assert (only.ends_at - only.starts_at, only.volume) == (dt.timedelta(seconds=1), 100)
    (plain,) = expand(body([slot(level=_DROP, volume=_DROP)]), None, *WEEK)
    assert (plain.level, plain.volume) == ("normal", None)
    assert expand({"version": 1}, None, *WEEK) == []


def test_a_slot_occurrence_carries_its_level_volume_and_source():
    live = {"url": "https://r.example/x"}
    (occurrence,) = expand(body([slot(level="priority", volume=30, playlist=_DROP, live=live)]), None, *WEEK)
    assert (occurrence.slot_id, occurrence.level, occurrence.volume, occurrence.playlist, occurrence.live) == (
        "sang", "priority", 30, None, live)
    assert occurrence.starts_at == dt.datetime(2026, 11, 23, 5, 30, tzinfo=UTC)


def test_a_once_item_is_placed_at_its_utc_instant_with_its_fields():
    (occurrence,) = expand(body(onces=[once(level="priority", volume=20)]), None, *WEEK)
    assert (occurrence.slot_id, occurrence.starts_at, occurrence.level, occurrence.volume) == (
        "hop", dt.datetime(2026, 11, 24, 12, 0, tzinfo=UTC), "priority", 20)
    assert occurrence.occurrence_id == "hop@2026-11-24T12:00:00Z"


def test_occurrences_are_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Ho_Chi_Minh")
    time.tzset()
    try:
        occurrences = expand(body([slot()], [once()]), None, *WEEK)
        assert [occ.occurrence_id for occ in occurrences] == ["sang@2026-11-23T05:30:00Z", "hop@2026-11-24T12:00:00Z"]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_zone_is_the_body_s_then_the_node_s_then_vietnam():
    without = body([slot()], timezone=_DROP)
    assert expand(without, "UTC", *WEEK)[0].starts_at == dt.datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    assert expand(without, None, *WEEK)[0].starts_at == dt.datetime(2026, 11, 22, 22, 30, tzinfo=UTC)
    assert expand(body([slot()]), "Asia/Tokyo", *WEEK)[0].starts_at.hour == 5
    assert active_at(without, "UTC", dt.datetime(2026, 11, 23, 5, 31, tzinfo=UTC)).slot_id == "sang"


@pytest.mark.parametrize("start,end", [(dt.datetime(2026, 11, 23), WEEK[1]), (WEEK[0], dt.datetime(2026, 11, 30))])
def test_expansion_needs_aware_times(start, end):
    with pytest.raises(ValueError) as info:
        expand(body([slot()]), None, start, end)
    assert str(info.value) == "start and end must be timezone-aware"


def test_a_slot_is_on_air_from_its_start_instant_to_just_before_its_end():
    schedule = body([slot()])
    starts = dt.datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    ends = starts + dt.timedelta(seconds=1800)
    assert active_at(schedule, None, starts).slot_id == "sang"
    assert active_at(schedule, None, starts - dt.timedelta(microseconds=1)) is None
    assert active_at(schedule, None, ends - dt.timedelta(microseconds=1)).slot_id == "sang"
    assert active_at(schedule, None, ends) is None


def test_a_priority_slot_wins_over_a_later_normal_one():
    schedule = body([slot(id="prio", level="priority", start="05:00", duration=7200), slot(id="late", start="05:30")])
    assert active_at(schedule, None, dt.datetime(2026, 11, 23, 5, 45, tzinfo=UTC)).slot_id == "prio"
    normal = body([slot(id="early", start="05:00", duration=7200), slot(id="late", start="05:30")])
    assert active_at(normal, None, dt.datetime(2026, 11, 23, 5, 45, tzinfo=UTC)).slot_id == "late"


def _in_local_zone(monkeypatch, zone, call):
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        return call()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_days_scanned_are_the_schedule_zone_s_not_the_node_s(monkeypatch):
    # 25 hours between the zones: a window read in the node's local zone would miss these slots.
    every_day = [1, 2, 3, 4, 5, 6, 7]
    pago = body([slot(id="late", weekdays=every_day, start="23:45", duration=60)], timezone="Pacific/Pago_Pago")
    start = dt.datetime(2026, 11, 24, 10, 30, tzinfo=UTC)          # 23:30 on the 23rd in Pago Pago
    found = _in_local_zone(monkeypatch, "Pacific/Kiritimati",
                           lambda: expand(pago, None, start, start + dt.timedelta(hours=1)))
    assert [occ.starts_at for occ in found] == [dt.datetime(2026, 11, 24, 10, 45, tzinfo=UTC)]
    kiri = body([slot(id="early", weekdays=every_day, start="00:15", duration=60)], timezone="Pacific/Kiritimati")
    end = dt.datetime(2026, 11, 25, 10, 30, tzinfo=UTC)            # 00:30 on the 26th in Kiritimati
    found = _in_local_zone(monkeypatch, "Pacific/Pago_Pago",
                           lambda: expand(kiri, None, end - dt.timedelta(hours=1), end))
    assert [occ.starts_at for occ in found] == [dt.datetime(2026, 11, 25, 10, 15, tzinfo=UTC)]


def test_a_once_item_counts_from_its_start_instant_and_not_at_the_window_end():
    item = once(playlist=_DROP, live={"url": "https://r.example/x"}, duration=90)
    at = dt.datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    (occurrence,) = expand(body(onces=[item]), None, at, at + dt.timedelta(seconds=1))
    assert (occurrence.ends_at, occurrence.playlist, occurrence.live) == (at + dt.timedelta(seconds=90), None,
                                                                           {"url": "https://r.example/x"})
    assert expand(body(onces=[item]), None, at - dt.timedelta(hours=1), at) == []
    (listed,) = expand(body(onces=[once()]), None, at, at + dt.timedelta(seconds=1))
    assert listed.playlist == (TRACK,) and listed.live is None
    assert len(expand(body(onces=[once()] * 200), None, *WEEK)) == 200


def test_missed_slots_are_those_over_not_started_within_31_days_newest_256():
    from node.playback.schedule import missed_between

    every_day = body([slot(weekdays=[1, 2, 3, 4, 5, 6, 7], duration=1800)])
    now = dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)              # the day's slot ended at 06:00 exactly
    missed = missed_between(every_day, None, now - dt.timedelta(days=3), now)
    assert [occ.occurrence_id for occ in missed] == [f"sang@2026-11-{d}T05:30:00Z" for d in (21, 22, 23)]
    running = missed_between(every_day, None, now - dt.timedelta(hours=25), now - dt.timedelta(seconds=1))
    assert [occ.occurrence_id for occ in running] == ["sang@2026-11-22T05:30:00Z"]
    started = {"sang@2026-11-22T05:30:00Z"}
    assert len(missed_between(every_day, None, now - dt.timedelta(days=3), now, started)) == 2
    assert len(missed_between(every_day, None, now - dt.timedelta(days=400), now)) == 31
    assert missed_between(every_day, None, now, now) == []
    assert missed_between(every_day, None, now + dt.timedelta(days=1), now) == []
    hourly = body([slot(id=f"h{h:02d}", weekdays=[1, 2, 3, 4, 5, 6, 7], start=f"{h:02d}:00", duration=60)
                   for h in range(24)])
    newest = missed_between(hourly, None, now - dt.timedelta(days=20), now)
    assert len(newest) == 256 and newest[-1].occurrence_id == "h05@2026-11-23T05:00:00Z"
    without_zone = body([slot(weekdays=[1, 2, 3, 4, 5, 6, 7])], timezone=_DROP)
    assert missed_between(without_zone, "UTC", now - dt.timedelta(days=1), now)[-1].starts_at.hour == 5


def test_a_playlist_position_needs_a_positive_duration_for_every_item_and_starts_at_zero():
    from node.playback.schedule import playlist_position, position_in_slot

    def occurrence(*durations):
        items = [{**TRACK, "duration": d} for d in durations]
        (occ,) = expand(body([slot(playlist=items, duration=3600)]), None, *WEEK)
        return occ

    starts = dt.datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    assert position_in_slot(occurrence(600), starts - dt.timedelta(seconds=30)) == 0.0
    assert playlist_position(occurrence(600), starts - dt.timedelta(seconds=30)) == (0, 0.0)
    assert playlist_position(occurrence(0.5, 600), starts + dt.timedelta(seconds=0.75)) == (1, 0.25)
    for bad in (0, -5, None, "600"):
        assert playlist_position(occurrence(bad), starts + dt.timedelta(seconds=1)) is None
    assert playlist_position(occurrence(0, 600), starts + dt.timedelta(seconds=1)) is None


def test_content_to_prefetch_follows_the_node_zone_when_the_schedule_has_none():
    from node.playback.schedule import needed_content

    without = body([slot()], timezone=_DROP)
    at = dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert needed_content(without, "UTC", at, dt.timedelta(hours=1)) == {TRACK["sha256"]}
    assert needed_content(without, None, at, dt.timedelta(hours=1)) == set()   # 05:30 in Vietnam is 22:30 UTC
