"""Review attacks on signed time (issue 9, helper timeattack). Each test states the SAFE behaviour the
node promises (docs/protocol.md 7/7a) and drives the whole node on virtual time (tests/onair_harness:
the real loop, intake, verifier, store, floor file, TimeKeeper) or the pure checks."""

from __future__ import annotations

import datetime as dt

import pytest
from onair_harness import T0, VirtualNode

from node.adapters.floorfile import FloorFile
from node.adapters.system_clock import FakeClock
from node.trust.keys import keyid_of_key
from node.trust.timeanswer import answer_body
from node.trust.trustdoc import load_trust_file
from provisioning.district.signing import sign_envelope
from provisioning.district.timeservice import time_keys
from provisioning.district.workspace import Workspace

NODE = "27787-01"
AWAIT_SIGNED = '[clock]\nawait_signed = "5s"\n'   # the shipped default (the harness's is 0: no district)


def outcomes(node, cid):
    return [d.outcome for d in node.app.intake.decisions if d.command_id == cid]


def test_floor_file_pushed_ahead_makes_the_node_forget_seen_ids_and_accept_a_replay(tmp_path, district_ws):
    # Life 1: a 6 h emergency is accepted and played; its id is remembered until it expires.
    first = VirtualNode(tmp_path, district_ws)
    cid = first.play(first.clip("tin-khan", 3), level="emergency", valid_for=6 * 3600)
    first.run(30)
    captured = first.last_envelope
    assert [r["content_id"] for r in first.records()] == ["tin-khan"]
    first.close()
    # The floor file now reads a year ahead: a torn 48-byte overwrite ("2027-" over "2026-12-31..."),
    # a bit flip, or a floor saved by older firmware from a wrong NTP clock. No checksum catches it.
    FloorFile(tmp_path / "state" / "time-floor").save(T0 + dt.timedelta(days=365))
    (tmp_path / "b").mkdir()
    node = VirtualNode(tmp_path / "b", district_ws, state_dir=tmp_path / "state",
                       clock=FakeClock(T0 + dt.timedelta(seconds=60)))
    try:
        node.clip("tin-khan", 3)
        node.run(700)                    # the district's time service is down for 11 minutes
        node.app.timekeeper.ask()
        node.answer_time()               # a fresh signed answer corrects the floor (clock_floor_corrected)
        assert node.events("clock_floor_corrected")
        node.deliver(captured)           # the attacker replays the captured, still-valid emergency
        node.run(30)
        # Safe: the id of a still-valid accepted command is never forgotten, so the replay is refused.
        assert outcomes(node, cid) == ["rejected"], "replay of an accepted emergency was accepted again"
        assert node.records() == []
    finally:
        node.close()


@pytest.mark.parametrize("source", ["ntp", "rtc"])
def test_ntp_one_day_behind_admits_an_expired_command_before_signed_time(tmp_path, district_ws, source):
    # A fresh node (floor = build date) boots with NTP "synchronised" (or an RTC) a day behind (spoofed
    # NTP, a reset RTC). On connect the broker delivers, before the first time answer, a command whose
    # validity ended 23 h ago (captured yesterday, replayed; this node never saw it: no seen id).
    wrong = T0 - dt.timedelta(days=1)
    node = VirtualNode(tmp_path, district_ws, clock=FakeClock(wrong, ntp=source == "ntp",
                                                              rtc=wrong if source == "rtc" else None),
                       extra_toml=AWAIT_SIGNED)
    node.app.intake.observe_clock(rtc=True)
    try:
        clip = node.clip("hom-qua", 3)
        cid = node.play(clip, level="emergency", valid_for=3600, at=T0 - dt.timedelta(days=1, seconds=60))
        node.run(1)
        node.clock.set_wall(T0 + dt.timedelta(seconds=1))    # NTP is fixed; the true time is T0
        node.app.timekeeper.ask()
        node.answer_time(at=T0 + dt.timedelta(seconds=1))
        node.run(30)
        # Safe: a command is admitted only by time bounded by signed time (or held until it comes), so an
        # expired one is rejected `expired` and never played.
        assert outcomes(node, cid) in (["held", "rejected"], ["rejected"]), outcomes(node, cid)
        assert node.records() == []
    finally:
        node.close()


@pytest.mark.parametrize("source", ["ntp", "rtc"])
def test_ntp_ten_years_ahead_loses_a_fresh_queued_emergency_before_signed_time(tmp_path, district_ws, source):
    # NTP claims sync but is ten years ahead (refused `trust_expired`), or the RTC is 300 days ahead
    # (inside its 400-day lead: refused `expired`). The emergency queued for the node while it was down
    # is delivered at connect, before the first signed time answer (a few hundred ms later).
    wrong = T0 + dt.timedelta(days=3652 if source == "ntp" else 300)
    node = VirtualNode(tmp_path, district_ws, clock=FakeClock(wrong, ntp=source == "ntp",
                                                              rtc=wrong if source == "rtc" else None),
                       extra_toml=AWAIT_SIGNED)
    node.app.intake.observe_clock(rtc=True)
    try:
        clip = node.clip("bao-lu", 3)
        cid = node.play(clip, level="emergency", valid_for=1800, at=T0)
        node.answer_time(at=T0 + dt.timedelta(seconds=1))    # signed time arrives; signed wins over NTP
        node.run(30)
        assert node.app.clock_trust.status()["source"] == "signed"
        # Safe: a command refused only because the clock is not yet checked against signed time is held
        # and decided by the signed time (as clock_untrusted ones are): the fresh emergency plays.
        assert [r["content_id"] for r in node.records()] == ["bao-lu"], outcomes(node, cid)
    finally:
        node.close()


def test_batch_time_answer_replayed_is_accepted_a_second_time(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    node.clock.ntp = False
    try:
        node.app.timekeeper.ask()                            # two outstanding nonces (connect + this)
        nonces = list(node.app.timekeeper.book.issued)
        assert len(nonces) == 2
        node.run(0.2)
        body = answer_body(NODE, nonces, node.clock.wall(), 200)     # one answer serving both (a batch)
        from node.trust.envelope import PAYLOAD_TIME
        batch = sign_envelope(PAYLOAD_TIME, body, time_keys(Workspace.load(district_ws)))
        topic = f"spk/node/{NODE}/time"
        node.broker.deliver(topic, batch)
        node.run(0.5)
        node.broker.deliver(topic, batch)                    # the same signed bytes again (replay/duplicate)
        node.run(0)
        # Safe (7a: "not a replay of an accepted one"): every nonce an accepted answer carries is used up.
        assert node.app.timekeeper.accepted == 1, "a replayed batch answer set the clock a second time"
        assert [e["data"]["reason"] for e in node.events("rejected")] == ["time_nonce_unknown"]
    finally:
        node.close()


def test_command_held_until_ntp_syncs_is_dropped_although_the_clock_became_trusted(tmp_path, district_ws):
    # No district time service answers (a district without the time duty, or it is down). The node boots
    # before systemd-timesyncd has synchronised; the queued command arrives at connect and is held.
    node = VirtualNode(tmp_path, district_ws)
    node.clock.ntp = False
    try:
        cid = node.play(node.clip("thong-bao", 3), valid_for=3600)
        assert outcomes(node, cid) == ["held"]
        node.run(10)
        node.clock.ntp = True                                # NTP synchronises 10 s after boot
        node.run(190)
        assert node.app.intake.observe_clock() is not None   # the clock is trusted (source ntp) ...
        # Safe: a command held only for want of trusted time is decided as soon as the clock is trusted
        # (by any source that may admit commands), not dropped as clock_untrusted after 120 s.
        assert [r["content_id"] for r in node.records()] == ["thong-bao"], outcomes(node, cid)
    finally:
        node.close()


def test_signed_answer_behind_the_floor_reopens_the_replay_of_a_forgotten_emergency(tmp_path, district_ws):
    # The district's clock steps back 70 minutes (a VM restored from a snapshot, an ntpd step, a server
    # without NTP after a reboot) and answers one request: validly signed, with the node's fresh nonce.
    node = VirtualNode(tmp_path, district_ws)
    node.clock.ntp = False
    try:
        node.app.timekeeper.ask()
        node.answer_time()
        cid = node.play(node.clip("bao-khan", 2), level="emergency", valid_for=600)
        node.run(20)
        captured = node.last_envelope
        for _ in range(5):                                   # 75 minutes of normal signed refreshes:
            node.run(900)                                    # the floor passes expiry + skew and the
            node.app.timekeeper.ask()                        # emergency's id is forgotten (correctly)
            node.answer_time()
        assert not node.app.store.seen(cid)
        node.app.timekeeper.ask()
        node.answer_time(at=T0 + dt.timedelta(minutes=5))    # inside the emergency's validity
        node.deliver(captured)                               # the attacker replays it
        node.run(20)
        # Safe: lowering the floor must not reopen replays ("exactly once"): commands issued before the
        # corrected time are refused (e.g. issued_before_reset) and nothing plays a second time.
        assert [r["content_id"] for r in node.records()] == ["bao-khan"], outcomes(node, cid)
    finally:
        node.close()


def test_torn_floor_file_write_is_read_as_a_floor_a_year_ahead(tmp_path):
    # A power cut during the 48-byte in-place overwrite (SD cards promise no atomic sector writes): the
    # first bytes are new, the rest old. "2027-01-01T00:05" over "2026-12-31T23:55" -> "2027-12-31T23:55".
    floor_file = FloorFile(tmp_path / "time-floor")
    old = dt.datetime(2026, 12, 31, 23, 55, tzinfo=dt.timezone.utc)
    floor_file.save(old)
    old_bytes = floor_file.path.read_bytes()
    floor_file.save(dt.datetime(2027, 1, 1, 0, 5, tzinfo=dt.timezone.utc))
    new_bytes = floor_file.path.read_bytes()
    floor_file.path.write_bytes(new_bytes[:4] + old_bytes[4:])
    # Safe: a torn record is detected (checksum / two alternating slots) and never read ahead of both the
    # old and the new value (the docstring: "unreadable (a torn write: start lower)").
    loaded = floor_file.load()
    assert loaded is None or loaded <= dt.datetime(2027, 1, 1, 0, 5, tzinfo=dt.timezone.utc), loaded


def test_time_service_signs_with_a_key_that_holds_only_the_time_role(district_ws):
    # The time duty runs online all the time (speaker-district serve), so its key is the one an attacker
    # who breaks into the district server gets first. The collector got a key of its own ("ack") for that.
    workspace = Workspace.load(district_ws)
    trust = load_trust_file(district_ws / "trust.json")

    roles = {role for key in time_keys(workspace) for role in trust.keys[keyid_of_key(key)].roles}
    # Safe: the online time key cannot sign schedules or remote config (or anything but time answers).
    assert roles == {"time"}, f"the time service's key also holds {sorted(roles - {'time'})}"


def test_real_node_with_ntp_ten_years_ahead_loses_a_queued_emergency(tmp_path, district_ws, fresh_broker,
                                                                      python_exe):
    """The same break against the real daemon, the shipped broker/ACL and the real time service."""
    import os
    import time

    from support import NodeProcess, district_probe, wait_until
    from test_time_attacks import NODE as REAL
    from test_time_attacks import TEN_YEARS, node_config, play_body, stored_events

    from provisioning.district.simulator import DistrictSimulator
    from provisioning.district.timeservice import TimeService

    flag = tmp_path / "ntp-synchronized"
    flag.touch()
    config, state = node_config(tmp_path, district_ws, fresh_broker,
                                f'[clock]\nntp_sync_file = "{flag}"\nwall_offset = {TEN_YEARS}\n')
    watcher = district_probe(fresh_broker, district_ws, subscribe=(f"spk/node/{REAL}/time/req",),
                             client_id=f"timeattack-{os.getpid()}-{time.monotonic_ns()}")
    node = NodeProcess(config, python_exe)
    try:
        watcher.wait_for(lambda t, o: t == f"spk/node/{REAL}/time/req", 20)   # subscribed: session exists
        assert node.terminate() == 0
        sim = DistrictSimulator(district_ws, fresh_broker.address)
        try:   # queued on its persistent session while it is down; valid for 10 minutes
            cid = sim.send("play", play_body("bao-lu", "emergency"), [REAL], valid_for=dt.timedelta(minutes=10))
        finally:
            sim.close()
        with TimeService(district_ws, fresh_broker.address):
            node = NodeProcess(config, python_exe)
            decided = wait_until(lambda: [e for e in stored_events(state) if e.get("type") in ("accepted", "rejected")
                                          and (e.get("data") or {}).get("command_id") == cid], 30)
            assert node.terminate() == 0
        # Safe: decided by the signed time that comes a few ms after connect: accepted (then played).
        assert decided[0]["type"] == "accepted", decided[0]["data"]
    finally:
        watcher.close()
        node.close()
