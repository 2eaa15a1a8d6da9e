"""Schedule expansion: weekdays, midnight, one-off items, DST, restart mid-slot, prefetch set."""

from __future__ import annotations

import datetime as dt

import pytest

from node.errors import RemoteDataError
from node.playback.schedule import active_at, expand, needed_content, playlist_position, position_in_slot

UTC = dt.timezone.utc
VN = dt.timezone(dt.timedelta(hours=7))


def track(n, duration=600):
    return {"content_id": f"c{n}", "sha256": f"{n:064x}", "length": 1000, "duration": duration,
            "codec": "opus", "url": f"https://d.example/c{n}"}


def body(slots=(), once=(), tz="Asia/Ho_Chi_Minh"):
    return {"version": 3, "timezone": tz, "slots": list(slots), "once": list(once)}


MORNING = {"id": "morning", "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "05:30", "duration": 1800,
           "level": "normal", "volume": 80, "playlist": [track(1), track(2), track(3)]}
EVENING = {"id": "evening", "weekdays": [1, 3, 5], "start": "17:00", "duration": 3600, "level": "normal",
           "volume": None, "live": {"url": "https://vov.example/live", "codec": "mp3"}}
LATE = {"id": "late", "weekdays": [7], "start": "23:30", "duration": 3600, "level": "priority",
        "volume": 60, "playlist": [track(9, 3600)]}


def test_weekday_slots_in_local_time_become_utc():
    week = expand(body([MORNING, EVENING]), None, dt.datetime(2025, 3, 3, tzinfo=VN),  # Monday
                  dt.datetime(2025, 3, 10, tzinfo=VN))
    assert [o.slot_id for o in week].count("morning") == 7
    assert [o.starts_at.astimezone(VN).isoweekday() for o in week if o.slot_id == "evening"] == [1, 3, 5]
    first = week[0]
    assert first.starts_at == dt.datetime(2025, 3, 2, 22, 30, tzinfo=UTC)  # 05:30 +07:00
    assert first.ends_at - first.starts_at == dt.timedelta(minutes=30)
    assert first.occurrence_id == "morning@2025-03-02T22:30:00Z"


def test_slot_crossing_midnight_belongs_to_its_start_day():
    sunday = dt.datetime(2025, 3, 9, 23, 45, tzinfo=VN)
    occ = active_at(body([LATE]), None, sunday + dt.timedelta(minutes=30))  # Monday 00:15 local
    assert occ is not None and occ.slot_id == "late"
    assert occ.starts_at.astimezone(VN) == dt.datetime(2025, 3, 9, 23, 30, tzinfo=VN)
    assert position_in_slot(occ, sunday + dt.timedelta(minutes=30)) == 45 * 60
    assert active_at(body([LATE]), None, dt.datetime(2025, 3, 11, 0, 15, tzinfo=VN)) is None  # Tue


def test_once_items_use_their_absolute_time():
    once = {"id": "flood-drill", "at": "2025-03-04T09:00:00+07:00", "duration": 300, "level": "priority",
            "volume": 100, "playlist": [track(5, 300)]}
    day = dt.datetime(2025, 3, 4, tzinfo=UTC)
    got = expand(body([], [once]), None, day, day + dt.timedelta(days=1))
    assert [(o.slot_id, o.starts_at) for o in got] == [("flood-drill", day.replace(hour=2))]


def test_dst_zone_keeps_local_wall_clock_and_handles_the_gap_and_the_repeat():
    berlin = body([{**MORNING, "id": "m", "start": "06:00"},
                   {**MORNING, "id": "gap", "start": "02:30"}], tz="Europe/Berlin")
    start, end = dt.datetime(2025, 3, 29, tzinfo=UTC), dt.datetime(2025, 3, 31, tzinfo=UTC)
    got = {(o.slot_id, o.starts_at) for o in expand(berlin, None, start, end)}
    assert ("m", dt.datetime(2025, 3, 29, 5, 0, tzinfo=UTC)) in got  # 06:00 CET
    assert ("m", dt.datetime(2025, 3, 30, 4, 0, tzinfo=UTC)) in got  # 06:00 CEST after the change
    assert ("gap", dt.datetime(2025, 3, 30, 1, 30, tzinfo=UTC)) in got  # 02:30 does not exist: 03:30 CEST
    autumn = expand(body([{**MORNING, "id": "rep", "start": "02:30"}], tz="Europe/Berlin"), None,
                    dt.datetime(2025, 10, 26, tzinfo=UTC), dt.datetime(2025, 10, 27, tzinfo=UTC))
    assert [o.starts_at for o in autumn] == [dt.datetime(2025, 10, 26, 0, 30, tzinfo=UTC)]  # once, first


def test_vietnam_has_no_dst_so_every_day_is_24_hours():
    year = expand(body([MORNING]), None, dt.datetime(2025, 1, 1, tzinfo=VN),
                  dt.datetime(2026, 1, 1, tzinfo=VN))
    assert len(year) == 365
    assert {o.starts_at.time() for o in year} == {dt.time(22, 30)}


def test_a_day_walked_in_compressed_time_sees_every_slot_exactly_once():
    slots = [{**MORNING, "id": f"s{h:02d}", "start": f"{h:02d}:{(h * 7) % 60:02d}", "duration": 900}
             for h in range(24)]
    sched = body(slots)
    day_start = dt.datetime(2025, 3, 9, 0, 0, tzinfo=VN)
    expanded = expand(sched, None, day_start, day_start + dt.timedelta(days=1))
    assert [o.slot_id for o in expanded] == [s["id"] for s in slots]
    seen: list[str] = []
    now = day_start
    while now < day_start + dt.timedelta(days=1):  # the loop's view, one tick a minute
        occ = active_at(sched, None, now)
        if occ is not None and (not seen or seen[-1] != occ.occurrence_id):
            seen.append(occ.occurrence_id)
        now += dt.timedelta(minutes=1)
    assert seen == [o.occurrence_id for o in expanded]


def test_restart_mid_slot_resumes_at_the_right_track_and_offset():
    start = dt.datetime(2025, 3, 5, 5, 30, tzinfo=VN)
    restarted = start + dt.timedelta(minutes=13, seconds=20)  # power came back 800 s into the slot
    occ = active_at(body([MORNING]), None, restarted)
    assert occ.slot_id == "morning"
    assert playlist_position(occ, restarted) == (1, 200.0)  # second 600 s track, 200 s in
    assert playlist_position(occ, start + dt.timedelta(minutes=30)) is None  # playlist is over
    live = active_at(body([EVENING]), None, dt.datetime(2025, 3, 5, 17, 20, tzinfo=VN))
    assert live.live["url"].startswith("https://") and playlist_position(live, restarted) is None


def test_priority_slot_wins_an_overlap():
    normal = {**MORNING, "id": "n", "start": "23:00", "duration": 7200}
    got = active_at(body([normal, LATE]), None, dt.datetime(2025, 3, 9, 23, 40, tzinfo=VN))
    assert got.slot_id == "late"


def test_needed_content_covers_the_horizon_only():
    now = dt.datetime(2025, 3, 9, 5, 0, tzinfo=VN)
    sched = body([MORNING, LATE])
    assert needed_content(sched, None, now, dt.timedelta(hours=1)) == {track(n)["sha256"] for n in (1, 2, 3)}
    assert track(9)["sha256"] in needed_content(sched, None, now, dt.timedelta(hours=20))


@pytest.mark.parametrize("broken", [
    {**MORNING, "weekdays": [0]},
    {**MORNING, "start": "24:00"},
    {**MORNING, "duration": 0},
    {**MORNING, "level": "emergency"},  # emergencies come by command, never by schedule
    {**MORNING, "live": {"url": "x"}},  # both playlist and live
    {**MORNING, "volume": 101},
])
def test_malformed_slot_is_rejected_with_a_reason_code(broken):
    with pytest.raises(RemoteDataError) as info:
        expand(body([broken]), None, dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2025, 1, 2, tzinfo=UTC))
    assert info.value.reason == "schedule_invalid"


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        expand(body([MORNING]), None, dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2))
