"""Heartbeat: alarms from readings, snapshots every N minutes, deltas that suppress noise but never
delay an alarm, input, playback or relay change. Every message is checked against its schema."""

import copy
import json

import pytest

from node.reporting import heartbeat as hb
from node.schemas import validate

T0 = 1_764_129_000


def readings(**changes):
    base = {
        "ver": "0.1.0", "up": 3600, "temp": 52.0, "thr": [], "load": 0.3, "mem": 70, "disk": 5000,
        "clk": {"ok": True, "src": "ntp"}, "cert_d": 700, "trust_d": 80,
        "net": {"op": "Viettel", "mccmnc": "45204", "act": "lte", "rssi": -71, "rsrp": -98, "sinr": 12,
                "reg": "home", "sim": "ready"},
        "play": {"state": "idle", "item": None, "level": None},
        "relays": {"amp": False, "z1": False},
        "inputs": {"door": False, "mains": True, "amp_fault": False},
        "outbox": 0, "dropped": 0,
    }
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def started(**kw):
    beat = hb.Heartbeat("27787-03", 7, **kw)
    snapshot = beat.on_connect(T0, readings())
    return beat, snapshot


# -- alarms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, alarm", [
    ({"inputs": {"door": True}}, "door_open"),
    ({"inputs": {"mains": False}}, "mains_lost"),
    ({"inputs": {"amp_fault": True}}, "amp_fault"),
    ({"thr": ["undervoltage", "undervoltage_occurred"]}, "undervoltage"),
    ({"temp": 80.0}, "overheat"),
    ({"disk": 199}, "disk_low"),
    ({"net": {"rssi": -106}}, "weak_signal"),
    ({"net": {"rsrp": -116}}, "weak_signal"),
    ({"net": {"sim": "absent"}}, "no_sim"),
    ({"net": {"sim": "pin_required"}}, "no_sim"),
    ({"clk": {"ok": False, "src": None}}, "clock_untrusted"),
    ({"cert_d": 29}, "cert_expiring"),
    ({"trust_d": 13}, "trust_expiring"),
    ({"failed_to_sound": True}, "failed_to_sound"),
])
def test_each_threshold_raises_its_alarm(change, alarm):
    assert hb.alarms_from(readings()) == []
    assert hb.alarms_from(readings(**change)) == [alarm]


def test_values_just_inside_thresholds_raise_nothing():
    quiet = readings(temp=79.9, disk=200, net={"rssi": -105, "rsrp": -115}, cert_d=30, trust_d=14,
                     thr=["undervoltage_occurred"])
    assert hb.alarms_from(quiet) == []


def test_unknown_readings_never_raise_alarms():
    assert hb.alarms_from({}) == []
    assert hb.alarms_from({"temp": None, "disk": None, "net": {}, "inputs": {"door": None}}) == []


def test_alarms_are_sorted_in_snapshot():
    snap = hb.build_snapshot("n1", 1, 1, readings(temp=90, inputs={"door": True}, disk=10), T0)
    assert snap["alarms"] == ["disk_low", "door_open", "overheat"]


# -- snapshots and deltas -------------------------------------------------------------------------


def test_snapshot_and_offline_messages_match_status_schema():
    beat, snapshot = started()
    validate("status", snapshot)
    validate("status", beat.will())
    validate("status", beat.shutdown(T0 + 5))
    assert beat.will() == {"v": 1, "node": "27787-03", "online": False, "birth": 7, "reason": "lost"}
    # missing modem and sensors: still a valid snapshot
    validate("status", hb.build_snapshot("27787-03", 7, 1, {}, T0))


def test_snapshot_is_compact_json():
    _, snapshot = started()
    data = hb.encode(snapshot)
    assert b" " not in data and json.loads(data) == snapshot
    assert len(data) < 600


def test_numeric_noise_inside_deadbands_sends_nothing():
    beat, _ = started()
    noisy = readings(temp=53.9, load=0.79, mem=66, disk=4951, up=3700,
                     net={"rssi": -76, "rsrp": -103, "sinr": 10})
    assert beat.tick(T0 + 60, noisy) == []


def test_change_past_deadband_sends_only_changed_fields():
    beat, _ = started()
    out = beat.tick(T0 + 60, readings(temp=54.5, net={"rssi": -78}))
    assert [kind for kind, _ in out] == ["delta"]
    delta = out[0][1]
    validate("delta", delta)
    assert delta == {"v": 1, "node": "27787-03", "seq": 2, "ts": T0 + 60, "temp": 54.5, "net": {"rssi": -78}}


def test_slow_drift_is_reported_once_it_adds_up():
    beat, _ = started()
    sent = []
    for step in range(1, 6):
        sent += beat.tick(T0 + 10 * step, readings(temp=52.0 + 0.5 * step))
    assert [payload["temp"] for _, payload in sent] == [54.0]


def test_alarm_change_is_sent_immediately_even_inside_min_interval():
    beat, _ = started(min_delta_interval_s=30)
    assert beat.tick(T0 + 1, readings(temp=60))[0][0] == "delta"  # first delta: interval free
    out = beat.tick(T0 + 2, readings(temp=60, inputs={"door": True}))
    assert len(out) == 1
    delta = out[0][1]
    assert delta["alarms"] == ["door_open"] and delta["inputs"] == {"door": True}
    validate("delta", delta)
    cleared = beat.tick(T0 + 3, readings(temp=60))[0][1]
    assert cleared["alarms"] == [] and cleared["inputs"] == {"door": False}


@pytest.mark.parametrize("change", [
    {"play": {"state": "warming", "item": "c-123", "level": "emergency"}},
    {"relays": {"amp": True}},
    {"inputs": {"mains": False}},
])
def test_playback_relay_and_input_changes_skip_the_rate_limit(change):
    beat, _ = started(min_delta_interval_s=30)
    beat.tick(T0 + 1, readings(temp=60))
    out = beat.tick(T0 + 2, readings(temp=60, **change))
    assert len(out) == 1 and out[0][0] == "delta"
    key = next(iter(change))
    assert set(out[0][1][key].items()) <= set(change[key].items())


def test_ordinary_change_waits_for_min_interval_but_is_not_forgotten():
    beat, _ = started(min_delta_interval_s=30)
    beat.tick(T0 + 1, readings(temp=60))
    assert beat.tick(T0 + 5, readings(temp=60, disk=3000)) == []
    out = beat.tick(T0 + 31, readings(temp=60, disk=3000))
    assert out[0][1]["disk"] == 3000


def test_full_snapshot_every_n_minutes_in_compressed_time():
    beat, first = started(full_every_s=900)
    kinds = []
    for second in range(1, 3601):
        for kind, payload in beat.tick(T0 + second, readings(up=3600 + second)):
            kinds.append((second, kind))
            validate("status" if kind == "full" else "delta", payload)
    assert [s for s, k in kinds if k == "full"] == [900, 1800, 2700, 3600]
    assert all(k == "full" for _, k in kinds)  # nothing else changed: no deltas


def test_seq_increases_across_full_and_delta():
    beat, first = started(full_every_s=100, min_delta_interval_s=0)
    seqs = [first["seq"]]
    for second in range(1, 250):
        for _, payload in beat.tick(T0 + second, readings(temp=50 + (second % 2) * 5)):
            seqs.append(payload["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_receiver_merging_deltas_reconstructs_the_current_snapshot():
    beat, status = started(min_delta_interval_s=0)
    later = readings(temp=70.0, net={"rssi": -90, "op": "Mobifone"}, play={"state": "playing", "item": "c-9"},
                     relays={"amp": True, "z1": True}, inputs={"door": True}, disk=3000)
    for kind, payload in beat.tick(T0 + 10, later):
        assert kind == "delta"
        status = hb.apply_delta(status, payload)
    expected = hb.build_snapshot("27787-03", 7, 0, later, T0 + 10)
    skip = ("seq", "ts", "up")
    assert {k: v for k, v in status.items() if k not in skip} == {
        k: v for k, v in expected.items() if k not in skip}


def test_member_removed_from_nested_object_is_sent_as_null_once():
    beat, _ = started(min_delta_interval_s=0)
    out = beat.tick(T0 + 1, {**readings(), "relays": {"amp": False}})
    assert out[0][1]["relays"] == {"z1": None}
    assert beat.tick(T0 + 2, {**readings(), "relays": {"amp": False}}) == []


def test_last_sent_is_what_the_receiver_holds_and_a_copy():
    beat, first = started(min_delta_interval_s=0)
    assert beat.last_sent == first
    beat.tick(T0 + 1, readings(net={"rssi": -90}))
    view = beat.last_sent
    assert view["net"]["rssi"] == -90 and view["net"]["op"] == "Viettel"
    view["net"]["rssi"] = 0
    assert beat.last_sent["net"]["rssi"] == -90


def test_tick_before_connect_sends_full():
    beat = hb.Heartbeat("27787-03", 7)
    out = beat.tick(T0, readings())
    assert out[0][0] == "full" and out[0][1]["online"] is True
