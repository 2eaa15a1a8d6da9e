"""The real daemon process against the real broker, a real HTTPS content server and real libVLC
writing WAV files: what a district sees, and that every message the node emits matches its schema."""

from __future__ import annotations

import json
import os
import time
import wave

import pytest
from support import NodeProcess, district_probe, wait_until, write_node_config

from node.schemas import errors as schema_errors
from node.schemas import schema_for
from provisioning.district.content_server import ContentServer
from provisioning.district.simulator import DistrictSimulator

NODE = "27787-02"
HARDWARE = """
[relays]
amplifier = { pin = 17, active_high = true }
zones = [ { name = "main", pin = 27, active_high = true } ]
warmup = "0.2s"
tail = "0.1s"
idle_hold = "0.5s"
min_off = "0.2s"

[inputs]
door = { pin = 5, active_high = false }
mains = { pin = 6, active_high = true }
amp_fault = { pin = 13, active_high = false }
"""


def tone(path, seconds=1.5, rate=16000):
    import math
    import struct

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return path


@pytest.fixture
def district(district_ws, broker, tmp_path):
    content = ContentServer(district_ws, tmp_path / "content").start()
    sim = DistrictSimulator(district_ws, broker.address)
    watcher = district_probe(broker, district_ws, client_id=f"e2e-{os.getpid()}-{time.monotonic_ns()}")
    yield sim, content, watcher
    watcher.close()
    sim.close()
    content.stop()


def start_node(tmp_path, district_ws, broker, python_exe, state_dir=None):
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], extra=HARDWARE,
                            state_dir=state_dir or tmp_path / "state")
    node = NodeProcess(cfg, python_exe)
    return node


def online(watcher, birth=None):
    return watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online") is True
                            and (birth is None or o["birth"] == birth), timeout=20)[1]


def record_for(watcher, content_id, timeout=30):
    return watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o and o.get("kind") == "play"
                            and o.get("content_id") == content_id, timeout=timeout)[1]


def amp_switched_off(watcher, timeout=15):
    """Wait for a delta that switches the amplifier off after one that switched it on."""
    def off():
        amp = [(json.loads(p).get("relays") or {}).get("amp") for t, p, _ in list(watcher.seen)
               if t == f"spk/node/{NODE}/delta"]
        return True in amp and False in amp[amp.index(True):]
    wait_until(off, timeout)


def marker_played(sim, content, watcher, tmp_path, content_id="marker"):
    """Play a short bulletin and wait for its record. The node plays commands of one level in the order
    it accepted them, so once the marker's record is in, anything wrongly accepted earlier has played
    (and been recorded) before it: a negative check that waits for an event, not a guessed time."""
    audio = tone(tmp_path / f"{content_id}.wav", 0.3)
    sim.send("play", sim.play_body(audio, content.publish(audio), content_id=content_id), [NODE])
    record = record_for(watcher, content_id)
    assert record["result"] == "completed", record
    return record


def assert_all_messages_match_schemas(watcher):
    checked = 0
    for topic, payload, _ in watcher.seen:
        if f"/{NODE}/" not in topic:
            continue
        obj = json.loads(payload)
        kind = topic.rsplit("/", 1)[-1]
        name = {"status": "status", "delta": "delta"}.get(kind) or schema_for(obj)
        assert schema_errors(name, obj) == [], (topic, obj)
        checked += 1
    assert checked >= 3


def test_signed_bulletin_is_played_into_a_wav_recorded_once_and_every_message_matches_its_schema(
        district, district_ws, broker, tmp_path, python_exe):
    sim, content, watcher = district
    node = start_node(tmp_path, district_ws, broker, python_exe)
    try:
        online(watcher)
        audio = tone(tmp_path / "ban-tin.wav", 1.5)
        body = sim.play_body(audio, content.publish(audio), level="priority", content_id="ban-tin-e2e")
        sim.send("play", body, ["c27787"])
        record = record_for(watcher, "ban-tin-e2e")
        assert record["result"] == "completed" and record["level"] == "priority" and record["sha256"] == body["sha256"]
        assert [name for _, name, on in record["relays"] if on][:2] == ["amp", "main"]
        wavs = list((tmp_path / "state" / "wav").glob("*.wav"))
        assert len(wavs) == 1
        with wave.open(str(wavs[0])) as w:
            assert w.getnframes() / w.getframerate() == pytest.approx(1.5, abs=0.3)
        amp_switched_off(watcher)  # the deltas for the tail and the amplifier switching off
        plays = [o for t, p, _ in watcher.seen if t.endswith("/events")
                 for o in [json.loads(p)] if o.get("kind") == "play"]
        assert len({p["id"] for p in plays}) == 1
        assert_all_messages_match_schemas(watcher)
    finally:
        assert node.terminate() == 0
        node.close()


def test_valid_tls_client_without_a_district_signing_key_cannot_make_a_node_play(
        district, district_ws, broker, tmp_path, python_exe):
    """The district's own broker certificate, stolen: it can publish on command topics, but without the
    Ed25519 signing keys nothing it sends makes a sound or moves a relay."""
    from node.trust import keys as ed25519

    sim, content, watcher = district
    node = start_node(tmp_path, district_ws, broker, python_exe)
    try:
        online(watcher)
        audio = tone(tmp_path / "fake.wav", 1.0)
        body = sim.play_body(audio, content.publish(audio), level="emergency", content_id="gia-mao")
        own_key = ed25519.generate()
        command = sim.command("play", body, [NODE])
        attempts = {
            "signed by its own key": sim.sign(command, keys=[own_key, own_key]),
            "signature copied from another command": _swap_payload(sim, body),
            "no signature at all": json.dumps({"payloadType": "application/vnd.speaker.command+json",
                                               "payload": "e30=", "signatures": []}).encode(),
            "plain JSON command": json.dumps(command).encode(),
            "garbage": os.urandom(300),
        }
        for payload in attempts.values():
            sim.publish_raw(f"spk/node/{NODE}/cmd", payload)
        reasons = []
        for _ in attempts:
            _, ev = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o and o.get("type") == "rejected"
                                     and id(o) not in map(id, reasons), timeout=15)
            reasons.append(ev)
        assert sorted(r["data"]["reason"] for r in reasons) == sorted(
            ["unknown_key", "bad_signature", "malformed", "malformed", "malformed"])
        before_marker = len(watcher.seen)
        marker_played(sim, content, watcher, tmp_path)
        assert len(list((tmp_path / "state" / "wav").glob("*.wav"))) == 1  # the marker's own sound only
        for topic, payload, _ in watcher.seen[:before_marker]:
            obj = json.loads(payload)
            assert obj.get("kind") != "play", obj
            assert (obj.get("relays") or {}).get("amp") is not True, obj
        plays = [o for t, p, _ in watcher.seen if t.endswith("/events")
                 for o in [json.loads(p)] if o.get("kind") == "play"]
        assert [p["content_id"] for p in plays] == ["marker"]
        assert_all_messages_match_schemas(watcher)
    finally:
        node.terminate()
        node.close()


def _swap_payload(sim, body):
    """A genuine signature (from a real, signed command) over different bytes: bad_signature."""
    import base64

    genuine = json.loads(sim.sign(sim.command("play", dict(body, level="normal"), [NODE])))
    other = sim.command("play", body, [NODE])
    genuine["payload"] = base64.b64encode(json.dumps(other).encode()).decode()
    return json.dumps(genuine).encode()


def test_undecodable_signed_file_gives_a_failed_record_an_alarm_and_relays_off(
        district, district_ws, broker, tmp_path, python_exe):
    sim, content, watcher = district
    node = start_node(tmp_path, district_ws, broker, python_exe)
    try:
        online(watcher)
        junk = tmp_path / "hong.mp3"
        junk.write_bytes(os.urandom(40_000))
        body = sim.play_body(junk, content.publish(junk), content_id="file-hong", duration=5.0)
        sim.send("play", body, [NODE])
        record = record_for(watcher, "file-hong")
        assert record["result"] == "failed" and record["reason"] in ("no_audio", "player_error:open_failed")
        watcher.find(lambda t, o: t.endswith("/events") and o and o.get("type") == "failed_to_sound", 10)
        watcher.find(lambda t, o: t.endswith(f"{NODE}/delta") and o and "failed_to_sound" in (o.get("alarms") or []),
                     10)
        watcher.find(lambda t, o: t.endswith(f"{NODE}/delta") and o and (o.get("relays") or {}).get("amp") is False,
                     10)
    finally:
        node.terminate()
        node.close()


def test_kill_9_mid_play_then_restart_leaves_relays_off_and_records_the_interrupted_item(
        district, district_ws, broker, tmp_path, python_exe):
    sim, content, watcher = district
    node = start_node(tmp_path, district_ws, broker, python_exe)
    try:
        first = online(watcher)
        audio = tone(tmp_path / "dai.wav", 6)
        body = sim.play_body(audio, content.publish(audio), content_id="dai-6s")
        sim.send("play", body, [NODE])
        watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/delta") and (o.get("play") or {}).get("state") == "playing",
                         20)
        node.kill9()
        node.close()
        node = start_node(tmp_path, district_ws, broker, python_exe)
        online(watcher, first["birth"] + 1)
        interrupted = record_for(watcher, "dai-6s")
        assert interrupted["result"] == "failed" and interrupted["reason"] == "interrupted_by_restart"
        # Still valid: it is played again, from the start, and recorded.
        again = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o.get("kind") == "play"
                                 and o.get("content_id") == "dai-6s" and o["id"] != interrupted["id"], 40)[1]
        assert again["result"] == "completed"
        # The new process started with every relay off: its first switching is the amplifier going on.
        assert again["relays"][0][1:] == ["amp", True]
    finally:
        node.terminate()
        node.close()


def test_replayed_command_is_rejected_after_a_restart(district, district_ws, broker, tmp_path, python_exe):
    sim, content, watcher = district
    node = start_node(tmp_path, district_ws, broker, python_exe)
    try:
        first = online(watcher)
        command = sim.command("stop", {"content_id": None, "level": "normal", "all": False}, [NODE])
        envelope = sim.sign(command)
        sim.publish_raw(f"spk/node/{NODE}/cmd", envelope)
        watcher.wait_for(lambda t, o: t.endswith("/events") and o.get("type") == "accepted"
                         and o["data"]["command_id"] == command["id"], 15)
        assert node.terminate() == 0
        node.close()
        node = start_node(tmp_path, district_ws, broker, python_exe)
        online(watcher, first["birth"] + 1)
        sim.publish_raw(f"spk/node/{NODE}/cmd", envelope)
        _, ev = watcher.wait_for(lambda t, o: t.endswith("/events") and o.get("type") == "rejected"
                                 and o["data"].get("command_id") == command["id"], 15)
        assert ev["data"]["reason"] == "replayed"
    finally:
        node.terminate()
        node.close()


def test_emergency_preempting_a_scheduled_programme_shows_in_the_wav_files_and_both_records(
        district, district_ws, broker, tmp_path, python_exe):
    import datetime as dt

    sim, content, watcher = district
    node = start_node(tmp_path, district_ws, broker, python_exe)
    try:
        online(watcher)
        music = tone(tmp_path / "nhac.wav", 8)
        entry = {k: v for k, v in sim.play_body(music, content.publish(music), content_id="nhac").items()
                 if k in ("content_id", "sha256", "length", "duration", "codec", "url")}
        start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
        sim.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
            {"id": "sang", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 30, "level": "normal",
             "volume": None, "playlist": [entry]}]}, [NODE])
        watcher.find(lambda t, o: t.endswith(f"{NODE}/delta") and (o.get("play") or {}).get("item") == "nhac", 20)
        time.sleep(1.5)  # the scenario: the music has been on air a while when the emergency comes
        alarm = tone(tmp_path / "khan.wav", 2)
        sim.send("play", sim.play_body(alarm, content.publish(alarm), level="emergency", content_id="khan"), [NODE])
        cut = record_for(watcher, "nhac")
        done = record_for(watcher, "khan")
        _, resumed = watcher.find(lambda t, o: t.endswith(f"{NODE}/events") and o.get("kind") == "play"
                                  and o["content_id"] == "nhac" and o["id"] != cut["id"], 30)
        assert (cut["result"], done["result"], resumed["result"]) == ("preempted", "completed", "completed")
        wavs = sorted((tmp_path / "state" / "wav").glob("*.wav"), key=lambda p: p.stat().st_mtime)
        seconds = []
        for path in wavs:
            with wave.open(str(path)) as w:
                seconds.append(w.getnframes() / w.getframerate())
        # Three outputs in order: the programme cut short, the whole emergency, the programme's rest.
        assert len(seconds) == 3
        assert seconds[0] < 6.5 and seconds[1] == pytest.approx(2, abs=0.3) and seconds[2] < 8 - 2
        assert wavs[1].name.startswith(done["command_id"])
    finally:
        node.terminate()
        node.close()
