"""Attacks on the node's clock, against the real daemon (`speaker-node run`), a real Mosquitto with the
shipped ACL and the district's real time service: queued and replayed time, NTP that lies, a floor
pushed into the future. None of these nodes has NTP unless the test gives it a flag file of its own."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time

import pytest
from support import NodeProcess, district_probe, wait_until

from node.adapters.store import StateStore
from node.trust.timeanswer import request_body
from provisioning.district.box import simulated_node_toml
from provisioning.district.simulator import DistrictSimulator
from provisioning.district.timeservice import TimeService, TimeSigner, time_keys
from provisioning.district.workspace import Workspace

NODE = "27788-01"
GROUPS = ["c27788", "d760", "p75"]
UTC = dt.timezone.utc
TEN_YEARS = 3652 * 86400.0


def node_config(tmp_path, ws, broker, clock_toml: str = "") -> tuple:
    state = tmp_path / "state"
    path = tmp_path / "node.toml"
    path.write_text(simulated_node_toml(ws / "nodes" / NODE, NODE, GROUPS, [broker.address], state_dir=state,
                                        trust_file=ws / "trust.json", ca_file=ws / "tls" / "ca.crt", keepalive=10,
                                        reconnect_max=1, relays=False, modem=False, extra=clock_toml))
    return path, state


def play_body(content_id: str, level: str) -> dict:
    return {"content_id": content_id, "level": level, "url": None, "sha256": hashlib.sha256(b"x").hexdigest(),
            "length": 1000, "duration": 2.0, "codec": "wav", "volume": None, "start_at": None, "zones": None}


def stored_events(state) -> list[dict]:
    """The node's own outbox (what it decided, whether or not the broker has delivered it yet)."""
    import json
    import sqlite3

    path = state / "outbox.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox")]


def events(watcher, **match):
    def pred(topic, obj):
        data = (obj or {}).get("data") or {}
        return topic == f"spk/node/{NODE}/events" and all(
            (obj.get(k) if k == "type" else data.get(k)) == v for k, v in match.items())
    return pred


@pytest.fixture
def watcher(district_ws, fresh_broker):
    probe = district_probe(fresh_broker, district_ws, subscribe=(f"spk/node/{NODE}/events", f"spk/node/{NODE}/status",
                                                                f"spk/node/{NODE}/delta", f"spk/node/{NODE}/time/req"),
                           client_id=f"time-attack-{os.getpid()}-{time.monotonic_ns()}")
    yield probe
    probe.close()


def test_queued_time_answer_does_not_revive_an_expired_emergency(tmp_path, district_ws, fresh_broker, watcher,
                                                                 python_exe):
    ws = Workspace.load(district_ws)
    config, _ = node_config(tmp_path, district_ws, fresh_broker)
    node = NodeProcess(config, python_exe)
    try:
        # First life: the node asks for time; nobody answers, but an eavesdropper keeps the request
        # and gets it a genuine signed answer.
        _, request = watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/time/req", 20)
        captured = TimeSigner(time_keys(ws), 200).answer(NODE, request_body(request["nonce"]), dt.datetime.now(UTC))
        assert node.terminate() == 0
        # While it is down: a 3-second emergency queued on its persistent session, and the answer.
        sim = DistrictSimulator(district_ws, fresh_broker.address)
        try:
            emergency = sim.send("play", play_body("bao-khan-cap", "emergency"), [NODE],
                                 valid_for=dt.timedelta(seconds=3))
            sim.publish_raw(f"spk/node/{NODE}/time", captured)
            time.sleep(4)   # the emergency expires while the node is off (this is the scenario, not a wait)
            with TimeService(district_ws, fresh_broker.address) as service:
                node = NodeProcess(config, python_exe)
                hit = watcher.find(events(watcher, type="rejected", command_id=emergency), 30)
                assert hit[1]["data"]["reason"] == "expired"      # judged by signed time, not revived
                assert service.answered >= 1
                sim.publish_raw(f"spk/node/{NODE}/time", captured)   # the attacker replays it live, too
                watcher.find(events(watcher, type="rejected", reason="time_nonce_unknown"), 15)
        finally:
            sim.close()
        assert not [p for t, p, _ in watcher.seen if t.endswith("/events") and b'"accepted"' in p
                    and emergency.encode() in p]
        assert node.terminate() == 0
    finally:
        node.close()


def test_ntp_ten_years_ahead_is_corrected_by_signed_time(tmp_path, district_ws, fresh_broker, watcher, python_exe):
    ntp_flag = tmp_path / "ntp-synchronized"          # this node's own NTP flag, not the host's
    ntp_flag.touch()
    config, state = node_config(tmp_path, district_ws, fresh_broker,
                                f'[clock]\nntp_sync_file = "{ntp_flag}"\nwall_offset = {TEN_YEARS}\n')
    state.mkdir(parents=True)
    wrong = dt.datetime.now(UTC) + dt.timedelta(seconds=TEN_YEARS)
    store = StateStore(state / "state.db")                # what older firmware saved from the wrong NTP clock
    store.put("time_floor", wrong.isoformat())
    store.close()
    with TimeService(district_ws, fresh_broker.address):
        node = NodeProcess(config, python_exe)
        try:
            watcher.find(events(watcher, type="clock_floor_corrected"), 30)
            watcher.find(lambda t, o: t.startswith(f"spk/node/{NODE}/") and "clock_conflict" in (o or {}).get(
                "alarms", []), 30)
            sim = DistrictSimulator(district_ws, fresh_broker.address)
            try:
                cid = sim.send("play", play_body("ban-tin", "normal"), [NODE])
                # accepted, not "expired" nor issued_before_reset (read from the node's outbox: delivery to
                # the district waits for the collector's acknowledgements, which is another duty's test)
                wait_until(lambda: [e for e in stored_events(state) if e.get("type") == "accepted"
                                    and e["data"].get("command_id") == cid], 30)
            finally:
                sim.close()
            assert node.terminate() == 0
        finally:
            node.close()
    saved = dt.datetime.fromisoformat(StateStore(state / "state.db").get("time_floor"))
    assert saved < dt.datetime.now(UTC) + dt.timedelta(minutes=5)   # the wrong floor is gone for good


def test_node_without_ntp_or_district_trusts_nothing_and_asks_again(tmp_path, district_ws, fresh_broker, watcher,
                                                                   python_exe):
    config, _ = node_config(tmp_path, district_ws, fresh_broker)
    node = NodeProcess(config, python_exe)
    try:
        first = watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/time/req", 20)[1]["nonce"]
        again = watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/time/req", 20)[1]["nonce"]
        assert first != again                            # a fresh nonce every time
        sim = DistrictSimulator(district_ws, fresh_broker.address)
        try:
            cid = sim.send("play", play_body("ban-tin", "normal"), [NODE])
        finally:
            sim.close()
        # Deferred while there is no trusted time; a district time service that appears lets it through.
        with TimeService(district_ws, fresh_broker.address):
            watcher.find(events(watcher, type="accepted", command_id=cid), 90)
        assert node.terminate() == 0
    finally:
        node.close()


def clock_ok(watcher, ok: bool, source=None, timeout=20):
    return watcher.find(lambda t, o: t.split("/")[-1] in ("status", "delta") and "clk" in (o or {})
                        and o["clk"].get("ok") is ok and (source is None or o["clk"].get("src") == source), timeout)


def test_unsolicited_time_answer_never_sets_a_real_nodes_clock(tmp_path, district_ws, fresh_broker, watcher,
                                                               python_exe):
    ws = Workspace.load(district_ws)
    config, _ = node_config(tmp_path, district_ws, fresh_broker)
    node = NodeProcess(config, python_exe)
    sim = DistrictSimulator(district_ws, fresh_broker.address)
    try:
        watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/time/req", 20)
        # Genuinely signed by the district's time key, ten years ahead, for a nonce the node never issued.
        unsolicited = TimeSigner(time_keys(ws), 100).answer(NODE, request_body("ab" * 32),
                                                            dt.datetime.now(UTC) + dt.timedelta(seconds=TEN_YEARS))
        sim.publish_raw(f"spk/node/{NODE}/time", unsolicited)
        hit = watcher.find(events(watcher, type="rejected", reason="time_nonce_unknown"), 15)
        assert hit[1]["data"]["envelope_sha256"] == hashlib.sha256(unsolicited).hexdigest()
        assert node.terminate() == 0
        statuses = [json.loads(p) for t, p, _ in watcher.seen if t.split("/")[-1] in ("status", "delta")]
        assert not [s for s in statuses if (s.get("clk") or {}).get("ok") is True]   # never trusted
        assert not [p for t, p, _ in watcher.seen if t.endswith("/events") and b'"accepted"' in p]
    finally:
        sim.close()
        node.close()


def test_replayed_time_answer_is_rejected_by_a_real_node(tmp_path, district_ws, fresh_broker, watcher, python_exe):
    ws = Workspace.load(district_ws)
    config, _ = node_config(tmp_path, district_ws, fresh_broker)
    node = NodeProcess(config, python_exe)
    sim = DistrictSimulator(district_ws, fresh_broker.address)
    try:
        # The district answers the node's request (as its time service would) ...
        _, request = watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/time/req", 20)
        answer = TimeSigner(time_keys(ws), 100).answer(NODE, request_body(request["nonce"]), dt.datetime.now(UTC))
        sim.publish_raw(f"spk/node/{NODE}/time", answer)
        clock_ok(watcher, True, "signed")
        # ... and a second copy of the same signed bytes (a replay, or a duplicate from a queue) is refused.
        sim.publish_raw(f"spk/node/{NODE}/time", answer)
        hit = watcher.find(events(watcher, type="rejected", reason="time_nonce_unknown"), 15)
        assert hit[1]["data"]["envelope_sha256"] == hashlib.sha256(answer).hexdigest()
        assert node.terminate() == 0
    finally:
        sim.close()
        node.close()
