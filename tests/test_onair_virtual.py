"""The node's on-air behaviour on virtual time: relay order and timing, preemption, stop, expiry,
schedules across midnight and restarts, a compressed day, failures to sound. The real loop, verifier,
arbiter, sequencer, store and outbox run; only the pins (MockFactory), the sound card (a player that
plays each clip for its signed duration), the broker and the clock are stand-ins."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

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
    assert [name for _, name, _ in record["relays"]][:3] == ["amp", "north", "south"]
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


def test_refusals_before_authentication_name_the_refused_bytes_by_digest_not_by_claimed_id(node):
    # A district must match every rejection to what it sent. Before a signature verifies, the id in the
    # body is anyone's claim (a forger could name a real command), so command_id stays null; the SHA-256
    # of the exact bytes matches only the envelope the district published.
    from node.schemas import validate

    clip = node.clip("x", 5)
    body = {**clip, "level": "normal", "volume": None, "start_at": None, "zones": None}
    stranger_id = node.send("play", body, keys=[ed25519.generate()])
    stranger = node.last_envelope
    bulletin = node.district.key("bulletin")
    node.send("play", body, keys=[bulletin] * 9)                 # more signatures than the limit of 8
    nine = node.last_envelope
    node.run(1)
    unknown, too_many = node.events("rejected")
    assert (unknown["data"]["reason"], too_many["data"]["reason"]) == ("unknown_key", "limit_exceeded")
    assert unknown["data"]["command_id"] is None and too_many["data"]["command_id"] is None
    assert unknown["data"]["envelope_sha256"] == hashlib.sha256(stranger).hexdigest()
    assert too_many["data"]["envelope_sha256"] == hashlib.sha256(nine).hexdigest()
    assert stranger_id.encode() in base64.b64decode(json.loads(stranger)["payload"])   # the id was there
    for event in (unknown, too_many):
        validate("event", event)


def test_refusal_after_authentication_names_both_the_signed_id_and_the_digest(node):
    command_id = node.play(node.clip("x", 5))
    envelope = node.last_envelope
    node.deliver(envelope)
    [replayed] = node.events("rejected")
    assert replayed["data"]["reason"] == "replayed" and replayed["data"]["command_id"] == command_id
    assert replayed["data"]["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()


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
    node.set_input("amp_fault", True)
    node.run(1)
    node.set_input("amp_fault", False)
    node.run(60)
    [failed] = node.records()
    assert failed["result"] == "failed" and failed["reason"] == "amp_fault"
    assert node.app.onair.failed_to_sound == "amp_fault"
    assert "failed_to_sound" in node.app.health.snapshot()["alarms"]
    node.play(node.clip("b", 5))
    node.run(60)
    assert node.records()[-1]["result"] == "completed"
    assert node.app.onair.failed_to_sound is None


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
    assert node.app.onair.sequencer.idle_hold == 5 and node.cfg.audio.default_volume == 55
    node.send("config", {"version": 2, "settings": {"trust.file": "/tmp/evil.json"}}, valid_for=86400)
    node.send("config", {"version": 3, "settings": {"audio.default_volume": 500}}, valid_for=86400)
    refused = node.events("config_refused")
    assert [r["data"]["problems"][0].split(":")[0] for r in refused] == ["trust.file", "audio.default_volume"]
    assert node.cfg.audio.default_volume == 55
    # A refused config does not use up its version: the corrected one is taken.
    node.send("config", {"version": 2, "settings": {"audio.default_volume": 65}}, valid_for=86400)
    assert node.events("config_applied")[-1]["data"]["version"] == 2 and node.cfg.audio.default_volume == 65
    node.send("config", {"version": 1, "settings": {"audio.default_volume": 10}}, valid_for=86400)
    assert node.events("rejected")[-1]["data"]["reason"] == "rollback"


def test_genuine_stored_config_still_applies_after_restart_and_a_revoked_signer_does_not(tmp_path, district_ws):
    """Configs the district sent are kept as signed envelopes and verified again at start: after a
    restart both settings are in force (merged oldest first), the node.toml value otherwise. A later
    restart under a trust document that revokes their signer drops them with stored_envelope_refused."""
    import shutil

    from provisioning.district.workspace import bump_trust

    ws = tmp_path / "district"
    shutil.copytree(district_ws, ws)
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    node.send("config", {"version": 1, "settings": {"audio.default_volume": 55, "relays.idle_hold": 5}},
              valid_for=86400)
    node.send("config", {"version": 2, "settings": {"audio.default_volume": 65}}, valid_for=86400)
    assert [e["version"] for e in node.app.store.get("config_envelopes")] == [1, 2]
    node.send("config", {"version": 3, "settings": {"relays.idle_hold": 7}}, valid_for=86400)
    assert [e["version"] for e in node.app.store.get("config_envelopes")] == [2, 3]  # v1 no longer counts
    clock, state = node.clock, node.state_dir
    node.close()

    node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)
    try:
        assert node.cfg.audio.default_volume == 80 and node.app.cfg.audio.default_volume == 65
        assert node.app.onair.sequencer.idle_hold == 7 and node.app.cfg.relays.idle_hold == 7
        assert node.events("stored_envelope_refused") == []
    finally:
        node.close()

    v1 = (ws / "trust.json").read_bytes()
    v2 = bump_trust(ws, revoke=["schedule"])   # the key that signed both configs (role config)
    (ws / "trust.json").write_bytes(v1)        # the SD card keeps version 1: version 2 arrives over MQTT
    node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)
    try:
        node.deliver(v2)
        assert node.events("trust_updated")[-1]["data"]["version"] == 2
        clock, state = node.clock, node.state_dir
    finally:
        node.close()
    node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)  # trust v2 from the stored chain
    try:
        assert node.app.intake.trust.document.version == 2
        assert node.app.cfg.audio.default_volume == 80 and node.app.cfg.relays.idle_hold == 30
        refused = [e["data"] for e in node.events("stored_envelope_refused")]
        assert [(r["store"], r["reason"]) for r in refused] == [("config", "revoked_key")] * 2
    finally:
        node.close()


def test_link_down_climbs_the_recovery_ladder_up_to_a_reboot_request_and_reports_the_return(node):
    """No registration and no broker for hours: requery, modem reset, then a reboot asked through a
    request file that the root-owned speaker-reboot.path watches (the daemon itself is unprivileged)."""
    from node.service.health import ModemReading

    health = node.app.health
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


# --- regressions found in review --------------------------------------------------------------------

def test_system_clock_days_ahead_does_not_make_the_node_forget_ids_it_must_still_refuse(node):
    """No NTP, time from a signed answer, and a system clock 3 days fast: ids of still-valid commands
    are forgotten by the trusted floor, never by the raw clock, so a replay stays a replay."""
    node.play(node.clip("a", 5), valid_for=6 * 3600)
    captured = node.last_envelope
    node.run(60)
    real = node.clock.wall()
    node.clock.ntp = False
    node.clock.set_wall(real + dt.timedelta(days=3))
    node.app.timekeeper.ask()
    node.answer_time(at=real)
    assert node.app.clock_trust.status()["source"] == "signed"
    node.run(2 * 3600)                                  # floor saves and pruning ran
    node.deliver(captured)
    assert node.events("rejected")[-1]["data"]["reason"] == "replayed"
    assert [r["content_id"] for r in node.records()] == ["a"]


def test_stop_by_content_id_signed_by_a_bulletin_key_cannot_cut_an_emergency(node):
    node.play(node.clip("bao", 60), level="emergency")
    node.run(5)
    node.send("stop", {"content_id": "bao", "level": None, "all": False})   # bulletin key only
    node.run(100)
    assert [(r["content_id"], r["result"]) for r in node.records()] == [("bao", "completed")]


def test_stop_all_cancels_a_bulletin_held_for_a_later_start_at(node):
    later = node.clock.wall() + dt.timedelta(minutes=10)
    node.play(node.clip("hen-gio", 5), start_at=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    node.send("stop", {"content_id": None, "level": None, "all": True})
    node.run(20 * 60)
    assert [(r["content_id"], r["result"], r["reason"]) for r in node.records()] == [
        ("hen-gio", "skipped", "stop_command")]
    assert node.relay_history() == []


def test_synchronised_start_sounds_at_start_at_after_the_warm_up(node):
    start = node.clock.wall().replace(microsecond=0) + dt.timedelta(seconds=30)
    node.play(node.clip("dong-bo", 5), start_at=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    node.run(60)
    [record] = node.records()
    assert record["started_at"] == pytest.approx(start.timestamp(), abs=0.01)
    amp_on = record["relays"][0]
    assert amp_on[1:] == ["amp", True] and amp_on[0] <= start.timestamp() - 2.0  # warmed up in time


def test_commands_journalled_before_a_power_cut_wait_for_trusted_time_then_play(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    clip = node.clip("sau-mat-dien", 5)
    node.play(node.clip("dang-phat", 60))
    node.play(clip)                          # queued behind the first
    node.run(10)
    clock = node.clock
    node.app.loop.stop()                     # power cut: no clean shutdown, nothing more is written
    node.app.close()
    clock.ntp = False                        # the Pi boots without NTP
    again = VirtualNode(tmp_path, district_ws, clock=clock, state_dir=node.state_dir)
    again.durations.update(node.durations)
    try:
        again.run(120)
        assert again.player.played() == []  # no trusted time: nothing decided, nothing dropped
        clock.ntp = True                     # NTP synchronised
        again.run(200)
        got = [(r["content_id"], r["result"]) for r in again.records()]
        assert ("dang-phat", "failed") in got            # interrupted_by_restart
        assert ("sau-mat-dien", "completed") in got and ("dang-phat", "completed") in got
    finally:
        again.close()


def test_a_zone_this_cabinet_does_not_have_is_skipped_without_wedging_the_node(node):
    clip = node.clip("cho", 5)
    node.send("play", {**clip, "level": "normal", "volume": None, "start_at": None, "zones": ["market"]})
    node.play(node.clip("sau", 5))
    node.run(60)
    assert [(r["content_id"], r["result"], r["reason"]) for r in node.records()] == [
        ("cho", "skipped", "unknown_zone"), ("sau", "completed", None)]
    assert not node.pin(AMP)


def test_clip_gone_from_the_cache_at_play_time_fails_and_the_next_item_plays(node):
    first, second = node.clip("dang", 20), node.clip("mat", 5)
    node.play(first)
    node.play(second)
    node.run(5)
    node.app.cache.path_for(second["sha256"]).unlink()   # evicted or corrupted meanwhile
    node.play(node.clip("tiep", 6))   # (6 s: a 5 s clip would be the same bytes, re-filling the cache)
    node.run(100)
    got = [(r["content_id"], r["result"], r["reason"]) for r in node.records()]
    assert got == [("dang", "completed", None), ("mat", "failed", "content_missing"), ("tiep", "completed", None)]
    assert not node.pin(AMP)


def test_live_relay_record_counts_the_whole_relay_across_a_reconnect(node):
    node.send("live", {"url": "https://relay.example.vn/vov1", "max_duration": 300, "level": "normal",
                       "volume": None, "grace": 30})
    node.run(100)
    node.player.drive_error(node.player.current_item, "stream_eof")
    node.run(400)
    [record] = node.records()
    assert record["result"] == "completed" and record["seconds"] == pytest.approx(300 - 2, abs=1)


def test_a_stopped_queued_live_relay_is_not_revived_by_a_restart(node):
    node.play(node.clip("dai", 60), level="priority")
    node.send("live", {"url": "https://relay.example.vn/vov1", "max_duration": 300, "level": "normal",
                       "volume": None, "grace": 30})
    live_id = node.send("stop", {"content_id": None, "level": "normal", "all": False}) and \
        node.records()[0]["command_id"]
    assert [(r["source"], r["result"]) for r in node.records()] == [("live", "skipped")]
    journalled = [slot for slot, _ in node.app.store.journal_items("cmd:")]
    assert f"cmd:{live_id}" not in journalled and len(journalled) == 1   # only the playing bulletin


def test_trust_update_over_mqtt_revokes_a_key_and_survives_a_restart(tmp_path, district_ws):
    """The district revokes its bulletin key with a root-signed trust document sent over MQTT: the node
    takes it, refuses the revoked key from then on, keeps it across a restart, and never goes back."""
    import shutil

    from provisioning.district.workspace import Workspace, bump_trust

    ws = tmp_path / "district"
    shutil.copytree(district_ws, ws)                   # a private copy: this test changes trust.json
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        old_bulletin = Workspace.load(ws).key("bulletin")
        v1 = (ws / "trust.json").read_bytes()
        v2 = bump_trust(ws, revoke=["bulletin"], add_keys={"bulletin-2": ["bulletin", "live"]})
        node.deliver(v2)
        assert node.events("trust_updated")[-1]["data"]["version"] == 2
        clip = node.clip("x", 5)
        node.district = Workspace.load(ws)                 # the district now signs with bulletin-2
        node.play(clip, keys=[old_bulletin])
        assert node.events("rejected")[-1]["data"]["reason"] == "revoked_key"
        node.deliver(v1)                                   # an older trust document: never
        assert node.events("rejected")[-1]["data"]["reason"] == "rollback"
        clock, state = node.clock, node.state_dir
        node.close()
        (ws / "trust.json").write_bytes(v1)     # the SD card still holds the provisioned version 1
        node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)   # v2 comes from the stored chain
        assert node.app.intake.trust.document.version == 2
        node.play(clip, keys=[old_bulletin])
        assert node.events("rejected")[-1]["data"]["reason"] == "revoked_key"
        node.play(node.clip("y", 5), keys=[Workspace.load(ws).key("bulletin-2")])
        node.run(30)
        assert [r["content_id"] for r in node.records()] == ["y"]
    finally:
        node.close()


def test_connecting_right_after_start_is_not_reported_as_a_restored_outage(node):
    """At start the modem is polled before the broker connects; that first second must not turn into
    a 'link_restored' report a minute later (SD writes and mobile data for nothing)."""
    from node.service.health import ModemReading

    health = node.app.health
    health.on_broker(False)
    node.app.loop.post(ModemReading(None, "starting"))
    node.run(0.2)
    health.on_broker(True)
    node.run(60)
    node.app.loop.post(ModemReading({"registration": "home", "sim": "ready"}))
    node.run(1)
    assert node.events("link_restored") == []
