"""The schedule across clock trouble (virtual time, the real loop and services): slots missed while the
clock was untrusted get `skipped` records once time returns, and a node that was off longer than the
cellular lead still plays its schedule by cellular time."""

from __future__ import annotations

import datetime as dt

from onair_harness import T0, VirtualNode

from node.adapters.system_clock import FakeClock
from node.playback.schedule import missed_between


def _once(start, clip, slot_id, seconds=60):
    return {"id": slot_id, "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": seconds, "level": "normal",
            "volume": 60, "playlist": [clip]}


def test_slots_missed_while_the_clock_was_untrusted_get_skipped_records_once_time_returns(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    try:
        clip = node.clip("ban-tin", 30)
        node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
            _once(T0 + dt.timedelta(minutes=10), clip, "muoi-phut"),
            _once(T0 + dt.timedelta(minutes=20), clip, "hai-muoi-phut"),
            _once(T0 + dt.timedelta(minutes=50), clip, "nam-muoi-phut")]}, valid_for=86400)
        node.clock.ntp = False                       # NTP lost, no signed time yet: nothing may play
        node.run(30 * 60)
        assert node.records() == []
        node.app.timekeeper.ask()
        node.answer_time()                           # signed time returns at T0 + 30 min
        node.run(30)
        skipped = [(r["slot_id"].split("@")[0] if r["slot_id"] else None, r["result"], r["reason"])
                   for r in node.records()]
        assert [s[1:] for s in skipped] == [("skipped", "clock_untrusted")] * 2
        node.run(25 * 60)                            # the slot after the gap plays normally
        assert [r["result"] for r in node.records()] == ["skipped", "skipped", "completed"]
    finally:
        node.close()


def test_cellular_time_after_a_40_day_outage_still_plays_the_schedule(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    clip = node.clip("ban-tin", 20)
    daily = {"id": "sang", "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "11:30", "duration": 120,
             "level": "normal", "volume": 70, "playlist": [clip]}   # 11:30 Hanoi = 04:30 UTC, T0 + 30 min
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [daily], "once": []},
              valid_for=400 * 86400)
    node.close()                                     # the floor is saved at T0
    later = T0 + dt.timedelta(days=40)
    clock = FakeClock(later, ntp=False)              # power back after 40 days: no NTP, no district
    again = VirtualNode(tmp_path, district_ws, clock=clock, state_dir=node.state_dir)
    again.durations.update(node.durations)           # the fake player's clip lengths
    try:
        again.app.intake.observe_clock(cellular=later)   # what the modem poll feeds in
        assert again.app.intake.clock_trust.trusted_now() is None    # 40 days > the 30-day lead
        again.run(40 * 60)
        records = again.records()
        assert [(r["content_id"], r["result"]) for r in records] == [("ban-tin", "completed")]
        assert records[0]["started_at"] == records[0]["scheduled_at"]   # on time, by cellular time
    finally:
        again.close()


def test_missed_between_ignores_what_is_still_on_and_what_already_started():
    item = {"content_id": "x", "sha256": "0" * 64, "length": 1, "duration": 30.0, "codec": "wav", "url": None}
    body = {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
        {"id": "a", "at": "2026-12-01T04:00:00Z", "duration": 60, "level": "normal", "playlist": [item]},
        {"id": "b", "at": "2026-12-01T04:10:00Z", "duration": 60, "level": "normal", "playlist": [item]},
        {"id": "c", "at": "2026-12-01T04:29:30Z", "duration": 60, "level": "normal", "playlist": [item]}]}
    since = dt.datetime(2026, 12, 1, 3, 59, tzinfo=dt.timezone.utc)
    now = dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.timezone.utc)
    everything = missed_between(body, "Asia/Ho_Chi_Minh", since, now)
    assert [o.slot_id for o in everything] == ["a", "b"]          # c is still on: it plays
    started = {everything[0].occurrence_id}
    assert [o.slot_id for o in missed_between(body, "Asia/Ho_Chi_Minh", since, now, started)] == ["b"]
