"""A node rebooted during an outage of the district (real daemon, real Mosquitto with the shipped ACL,
the district's real time service and content server, libVLC writing WAV files): the floor file keeps
its clock close enough for bounded cellular time, and slots it could not play get `skipped` records
once signed time returns. None of these nodes has NTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from support import NodeProcess, district_probe, wait_until
from test_e2e_node import tone

from node.adapters.floorfile import FloorFile
from provisioning.district.box import simulated_node_toml
from provisioning.district.content_server import ContentServer
from provisioning.district.simulator import DistrictSimulator
from provisioning.district.timeservice import TimeService

NODE = "27788-01"
GROUPS = ["c27788", "d760", "p75"]
UTC = dt.timezone.utc


def node_config(tmp_path, ws, broker, *, modem: bool) -> tuple:
    state = tmp_path / "state"
    path = tmp_path / "node.toml"
    path.write_text(simulated_node_toml(ws / "nodes" / NODE, NODE, GROUPS, [broker.address], state_dir=state,
                                        trust_file=ws / "trust.json", ca_file=ws / "tls" / "ca.crt", keepalive=10,
                                        reconnect_max=1, relays=False, modem=modem, modem_poll=5.0))
    return path, state


@pytest.fixture
def district(district_ws, fresh_broker, tmp_path):
    content = ContentServer(district_ws, tmp_path / "content").start()
    sim = DistrictSimulator(district_ws, fresh_broker.address)
    watcher = district_probe(fresh_broker, district_ws, subscribe=(f"spk/node/{NODE}/events",
                                                                  f"spk/node/{NODE}/status", f"spk/node/{NODE}/delta"),
                             client_id=f"time-outage-{os.getpid()}-{time.monotonic_ns()}")
    yield sim, content, watcher
    watcher.close()
    sim.close()
    content.stop()


def clock_source(watcher, source, timeout=30):
    """The node's heartbeat says its clock is trusted, from `source`."""
    return watcher.find(lambda t, o: t.split("/")[-1] in ("status", "delta") and (o.get("clk") or {}).get("ok")
                        is True and o["clk"].get("src") == source, timeout)


def slot_schedule(sim, content, tmp_path, start: dt.datetime, seconds: float = 3) -> dict:
    audio = tone(tmp_path / "chuong-trinh.wav", seconds)
    entry = {k: v for k, v in sim.play_body(audio, content.publish(audio), content_id="chuong-trinh").items()
             if k in ("content_id", "sha256", "length", "duration", "codec", "url")}
    return {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
        {"id": "trua", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 10, "level": "normal",
         "volume": None, "playlist": [entry]}]}


def play_record(watcher, timeout):
    return watcher.find(lambda t, o: t.endswith("/events") and o.get("kind") == "play"
                        and o.get("content_id") in ("chuong-trinh", "trua"), timeout)[1]


def test_reboot_during_an_outage_keeps_the_schedule_by_the_floor_file(tmp_path, district_ws, fresh_broker, district,
                                                                      python_exe):
    sim, content, watcher = district
    config, state = node_config(tmp_path, district_ws, fresh_broker, modem=True)
    with TimeService(district_ws, fresh_broker.address):
        node = NodeProcess(config, python_exe)
        try:
            clock_source(watcher, "signed")
            signed_at = dt.datetime.now(UTC)
            start = (signed_at + dt.timedelta(seconds=25)).replace(microsecond=0)
            schedule = slot_schedule(sim, content, tmp_path, start)
            sim.send("schedule", schedule, [NODE])
            sha = schedule["once"][0]["playlist"][0]["sha256"]
            # accepted, its audio prefetched into the cache, and the floor on the card
            wait_until(lambda: (state / "cache" / sha[:2] / f"{sha}.bin").exists()
                       and FloorFile(state / "time-floor").load(), 20)
        except BaseException:
            node.close()
            raise
    # The district goes away and the power is cut: no clean stop, nothing more is saved.
    node.kill9()
    floor = FloorFile(state / "time-floor").load()
    assert floor is not None and floor >= signed_at - dt.timedelta(seconds=15)   # minutes behind, not weeks
    node = NodeProcess(config, python_exe)
    try:
        # No NTP, no district: the modem's network time is within the floor's bound, so it is trusted ...
        clock_source(watcher, "cellular")
        # ... and the programme plays on time.
        record = play_record(watcher, 45)
        assert record["result"] == "completed", record
        assert abs(record["started_at"] - start.timestamp()) < 2.0
        assert node.terminate() == 0
    finally:
        node.close()


def test_slots_missed_while_a_rebooted_node_had_no_time_get_skipped_records(tmp_path, district_ws, fresh_broker,
                                                                             district, python_exe):
    sim, content, watcher = district
    config, state = node_config(tmp_path, district_ws, fresh_broker, modem=False)
    with TimeService(district_ws, fresh_broker.address):
        node = NodeProcess(config, python_exe)
        try:
            clock_source(watcher, "signed")
            start = (dt.datetime.now(UTC) + dt.timedelta(seconds=6)).replace(microsecond=0)
            schedule = slot_schedule(sim, content, tmp_path, start)
            schedule["once"][0]["duration"] = 4
            sim.send("schedule", schedule, [NODE])
            watcher.find(lambda t, o: t.endswith("/events") and o.get("type") == "accepted"
                         and (o.get("data") or {}).get("command") == "schedule", 15)
            assert node.terminate() == 0
        finally:
            node.close()
    # Restarted with no district, no NTP, no modem: no trusted time, so the slot cannot play.
    node = NodeProcess(config, python_exe)
    try:
        watcher.find(lambda t, o: t.endswith("/status") and o.get("online") and (o.get("clk") or {}).get("ok")
                     is False, 20)
        wait_until(lambda: dt.datetime.now(UTC) > start + dt.timedelta(seconds=5), 20)
        assert not [p for t, p, _ in watcher.seen if t.endswith("/events") and json.loads(p).get("kind") == "play"]
        with TimeService(district_ws, fresh_broker.address):
            record = play_record(watcher, 90)        # the node asks again (back-off <= 60 s)
        assert (record["result"], record["reason"]) == ("skipped", "clock_untrusted"), record
        assert record["slot_id"].startswith("trua@")
        assert node.terminate() == 0
    finally:
        node.close()
