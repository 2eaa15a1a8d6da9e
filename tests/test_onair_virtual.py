"""The node's on-air behaviour on virtual time: relay order and timing, preemption, stop, expiry,
schedules across midnight and restarts, a compressed day, failures to sound. The real loop, verifier,
arbiter, sequencer, store and outbox run; only the pins (MockFactory), the sound card (a player that
plays each clip for its signed duration), the broker and the clock are stand-ins."""

from __future__ import annotations

import datetime as dt

import pytest
from onair_harness import T0, VirtualNode

from node.trust import keys as ed25519

AMP, NORTH, SOUTH = 17, 27, 22


@pytest.fixture
def node(tmp_path, district_ws):
    n = VirtualNode(tmp_path, district_ws)
    yield n
    n.close()


def _changes(node, t0):
    return [(round(t - t0, 3), name, on) for t, name, on in node.relay_history()]


def test_single_item_relay_order_and_timings(node):
    clip = node.clip("ban-tin", 10)
    t0 = node.clock.monotonic()
    node.play(clip)
    node.run(60)
    assert _changes(node, t0) == [
        (0.0, "amplifier", True),                                  # amplifier first
        (2.0, "north", True), (2.0, "south", True),                # zones after the 2 s warm-up
        (13.0, "north", False), (13.0, "south", False),            # 10 s of audio, then the 1 s tail
        (43.0, "amplifier", False),                                # after the 30 s idle hold
    ]
    [record] = node.records()
    assert record["result"] == "completed" and record["seconds"] == pytest.approx(10, abs=0.01)
    assert [name for _, name, _ in record["relays"]][:3] == ["amplifier", "north", "south"]
    assert not node.pin(AMP) and not node.pin(NORTH)


def test_back_to_back_items_do_not_chatter_the_amplifier(node):
    a, b = node.clip("a", 5), node.clip("b", 5)
    t0 = node.clock.monotonic()
    node.play(a)
    node.play(b)
    node.run(10)      # a ends at 7 s; b follows at once
    node.run(20)      # b has ended: tail, then idle hold
    node.play(node.clip("c", 3))  # within the idle hold: no warm-up, amplifier stays on
    node.run(60)
    amp = [(t, on) for t, name, on in _changes(node, t0) if name == "amplifier"]
    assert amp == [(0.0, True), (amp[1][0], False)] and amp[1][0] > 30
    assert [r["content_id"] for r in node.records()] == ["a", "b", "c"]
    assert all(r["result"] == "completed" for r in node.records())


def test_emergency_preempts_a_scheduled_programme_which_then_resumes(node):
    music = node.clip("chuong-trinh", 120)
    start = T0 + dt.timedelta(seconds=30)
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
        {"id": "sang", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 300, "level": "normal",
         "volume": 60, "playlist": [music]}]}, valid_for=86400)
    node.run(60)                                   # programme on air since 30 s (warm-up began at 28 s)
    alarm = node.clip("khan-cap", 20)
    node.play(alarm, level="emergency")
    node.run(200)
    results = [(r["content_id"], r["result"], r["source"], r["level"]) for r in node.records()]
    assert results == [("chuong-trinh", "preempted", "schedule", "normal"),
                       ("khan-cap", "completed", "command", "emergency"),
                       ("chuong-trinh", "completed", "schedule", "normal")]
    cut, emergency, resumed = node.records()
    # No warm-up for the emergency: the amplifier was already on, it starts at once.
    assert emergency["started_at"] == pytest.approx(cut["ended_at"], abs=0.01)
    # Radio-style resume: the programme continues where it would be now, not from the start.
    assert resumed["seconds"] == pytest.approx(120 - (emergency["ended_at"] - start.timestamp()), abs=0.5)
    assert cut["started_at"] == pytest.approx(start.timestamp(), abs=0.01)  # the first second is heard


def test_stop_by_level_stops_current_and_queued_of_that_level_only(node):
    node.play(node.clip("n1", 30))
    node.play(node.clip("n2", 30))
    node.play(node.clip("p1", 30), level="priority")
    node.run(5)
    node.send("stop", {"content_id": None, "level": "normal", "all": False})
    node.run(100)
    got = [(r["content_id"], r["result"]) for r in node.records()]
    assert ("n1", "stopped") in got and ("n2", "skipped") in got and ("p1", "completed") in got
    assert not node.pin(AMP)


def test_stop_all_cuts_an_emergency_at_once(node):
    node.play(node.clip("e", 60), level="emergency")
    node.run(10)
    node.send("stop", {"content_id": None, "level": None, "all": True})
    node.run(2)
    assert [(r["content_id"], r["result"]) for r in node.records()] == [("e", "stopped")]
    assert not node.pin(NORTH)  # zones off after the tail; the amplifier follows after the idle hold


def test_expired_queue_item_is_dropped_with_a_skipped_record(node):
    node.play(node.clip("long", 120))
    node.play(node.clip("short-lived", 5), valid_for=60)   # expires while "long" still plays
    node.run(200)
    got = [(r["content_id"], r["result"], r["reason"]) for r in node.records()]
    assert got == [("short-lived", "skipped", "expired"), ("long", "completed", None)]


def test_forged_command_never_moves_a_relay_or_plays(node):
    clip = node.clip("x", 5)
    forger = ed25519.generate()
    node.send("play", {**clip, "level": "emergency", "volume": None, "start_at": None, "zones": None},
              keys=[forger, forger])
    node.run(60)
    assert node.relay_history() == [] and node.player.played() == [] and node.records() == []
    [rejected] = node.events("rejected")
    assert rejected["data"]["reason"] == "unknown_key"


def test_schedule_across_midnight_plays_both_sides(node):
    a, b = node.clip("truoc-nua-dem", 600), node.clip("sau-nua-dem", 600)
    # 23:55 in Hanoi = 16:55 UTC; a 20-minute slot runs into the next day.
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "once": [], "slots": [
        {"id": "khuya", "weekdays": [T0.isoweekday()], "start": "23:55", "duration": 1200, "level": "normal",
         "volume": None,
         "playlist": [a, b]}]}, valid_for=86400 * 2)
    node.run_until(T0.replace(hour=17, minute=30))
    got = [(r["content_id"], r["result"]) for r in node.records()]
    assert got == [("truoc-nua-dem", "completed"), ("sau-nua-dem", "completed")]
    assert node.records()[1]["started_at"] > T0.replace(hour=17).timestamp()  # after midnight in Hanoi


def test_24_hours_of_schedule_in_compressed_time_every_slot_played_and_recorded(node):
    clips = [node.clip(f"bai-{i}", 300) for i in range(3)]
    slots = [{"id": "sang", "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "05:30", "duration": 1800,
              "level": "normal", "volume": 70, "playlist": clips},
             {"id": "trua", "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "11:15", "duration": 900,
              "level": "priority", "volume": 70, "playlist": clips[:2]},
             {"id": "chieu", "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "17:00", "duration": 1800,
              "level": "normal", "volume": 70, "playlist": clips}]
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": slots, "once": []},
              valid_for=86400 * 3)
    node.run(86400)
    by_slot: dict[str, list[str]] = {}
    for r in node.records():
        by_slot.setdefault(r["slot_id"].split("@")[0], []).append((r["content_id"], r["result"]))
    # From 11:00 on the 26th (Hanoi) to 11:00 on the 27th: trua, chieu, sang each once.
    assert by_slot == {"trua": [("bai-0", "completed"), ("bai-1", "completed")],
                       "chieu": [(c["content_id"], "completed") for c in clips],
                       "sang": [(c["content_id"], "completed") for c in clips]}
    assert not node.pin(AMP)


def test_restart_mid_slot_resumes_the_slot(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    clip = node.clip("dai-phat", 600)
    start = T0 + dt.timedelta(seconds=10)
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
        {"id": "s", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 900, "level": "normal",
         "volume": None, "playlist": [clip]}]}, valid_for=86400)
    node.run(100)
    clock = node.clock
    node.close()                                   # SIGTERM mid-slot
    clock.advance(30)                              # the restart takes 30 s
    again = VirtualNode(tmp_path, district_ws, clock=clock, state_dir=node.state_dir)
    again.durations.update(node.durations)
    try:
        again.run(1000)
        # The final record of the first run may be delivered twice (its PUBACK arrived after the loop
        # stopped): at least once, with the same id, is the contract; the district de-duplicates by id.
        records = list({r["id"]: r for r in node.records() + again.records()}.values())
        assert [(r["content_id"], r["result"]) for r in records] == [("dai-phat", "stopped"),
                                                                     ("dai-phat", "completed")]
        resumed = records[1]
        # resumed at the wall-clock position (~130 s in), not from the start
        assert resumed["seconds"] == pytest.approx(600 - (resumed["started_at"] - start.timestamp()), abs=1)
    finally:
        again.close()


def test_content_missing_at_slot_time_is_an_event_and_a_skipped_record(node):
    missing = {"content_id": "khong-co", "sha256": "ab" * 32, "length": 1000, "duration": 60.0,
               "codec": "mp3", "url": None}
    start = T0 + dt.timedelta(seconds=10)
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
        {"id": "s", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 60, "level": "normal",
         "volume": None, "playlist": [missing]}]}, valid_for=86400)
    node.run(120)
    assert [e["data"]["content_id"] for e in node.events("content_missing")] == ["khong-co"]
    assert [(r["content_id"], r["result"], r["reason"]) for r in node.records()] == [
        ("khong-co", "skipped", "content_missing")]


def test_amplifier_fault_during_play_is_failed_to_sound_and_latched_until_a_good_play(node):
    node.play(node.clip("a", 20))
    node.run(5)
    node.pins.pin(13).drive_low()      # amp_fault is active-low
    node.run(1)
    node.pins.pin(13).drive_high()
    node.run(60)
    [failed] = node.records()
    assert failed["result"] == "failed" and failed["reason"] == "amp_fault"
    assert node.app.parts.onair.failed_to_sound == "amp_fault"
    assert "failed_to_sound" in node.app.parts.health.snapshot()["alarms"]
    node.play(node.clip("b", 5))
    node.run(60)
    assert node.records()[-1]["result"] == "completed"
    assert node.app.parts.onair.failed_to_sound is None


def test_live_stream_that_drops_reconnects_within_grace(node):
    node.send("live", {"url": "https://relay.example.vn/vov1", "max_duration": 600, "level": "normal",
                       "volume": None, "grace": 30})
    node.run(10)
    node.player.drive_error(node.player.current_item, "stream_eof")   # the stream drops
    node.run(3)                                                        # retried after 2 s
    assert node.player.state.value == "playing"
    node.run(700)
    got = [(r["content_id"][:5], r["source"], r["result"]) for r in node.records()]
    assert got == [("live:", "live", "completed")]
    assert [e["type"] for e in node.events() if e["type"].startswith("live")] == ["live_interrupted"]


def test_live_stream_that_never_answers_fails_after_grace_and_relays_go_off(node):
    node.player.answering = False
    node.send("live", {"url": "https://relay.example.vn/dead", "max_duration": 600, "level": "normal",
                       "volume": None, "grace": 10})
    node.run(60)
    assert len(node.player.played()) >= 3  # it kept trying within the grace period
    [record] = node.records()
    assert record["result"] == "failed" and record["reason"] == "stream_lost"
    assert not node.pin(AMP) and not node.pin(NORTH)


def test_signed_config_changes_whitelisted_settings_and_refuses_the_rest(node):
    node.send("config", {"version": 1, "settings": {"audio.default_volume": 55, "relays.idle_hold": 5}},
              valid_for=86400)
    [applied] = node.events("config_applied")
    assert applied["data"]["keys"] == ["audio.default_volume", "relays.idle_hold"]
    assert node.app.parts.onair.sequencer.idle_hold == 5 and node.cfg.audio.default_volume == 55
    node.send("config", {"version": 2, "settings": {"trust.file": "/tmp/evil.json"}}, valid_for=86400)
    node.send("config", {"version": 3, "settings": {"audio.default_volume": 500}}, valid_for=86400)
    refused = node.events("config_refused")
    assert [r["data"]["problems"][0].split(":")[0] for r in refused] == ["trust.file", "audio.default_volume"]
    assert node.cfg.audio.default_volume == 55
    node.send("config", {"version": 1, "settings": {"audio.default_volume": 10}}, valid_for=86400)
    assert node.events("rejected")[-1]["data"]["reason"] == "rollback"


def test_link_down_climbs_the_recovery_ladder_up_to_a_reboot_request_and_reports_the_return(node):
    """No registration and no broker for hours: requery, modem reset, then a reboot asked through a
    request file that the root-owned speaker-reboot.path watches (the daemon itself is unprivileged)."""
    from node.service.health import ModemReading

    health = node.app.parts.health
    health.broker_connected = False
    for _ in range(3 * 60):                       # three hours, one modem poll a minute
        node.app.loop.post(ModemReading(None, "ModemGone: port vanished"))
        node.run(60)
    steps = [e["data"]["step"] for e in node.events("recovery_step")]
    assert steps[0] == "requery" and "cfun_reset" in steps and "reboot" in steps
    assert steps.index("cfun_reset") < steps.index("reboot")
    with open(node.app.cfg.storage.runtime_dir + "/reboot-request") as f:
        assert "recovery" in f.read()
    health.broker_connected = True                # the link returns
    node.app.loop.post(ModemReading({"registration": "home", "sim": "ready", "operator": "Viettel"}))
    node.run(1)
    [restored] = node.events("link_restored")
    assert restored["data"]["down_s"] >= 3 * 3600 - 120 and "reboot" in restored["data"]["steps"]


def test_flood_of_forged_commands_is_rate_limited_into_a_bounded_number_of_events(node):
    forger = ed25519.generate()
    clip = node.clip("x", 5)
    body = {**clip, "level": "normal", "volume": None, "start_at": None, "zones": None}
    for _ in range(500):
        node.send("play", body, keys=[forger])
    rejected = node.events("rejected")
    assert len(rejected) == 20                      # the burst, then nothing until the bucket refills
    node.run(60)                                    # ten a minute afterwards
    node.send("play", body, keys=[forger])
    last = node.events("rejected")[-1]
    assert last["data"]["suppressed"] == 480 and node.records() == []
