"""One play, one record with the real daemon, the real broker and real libVLC: kill -9 at each on-air
storage transition (the fault hook, SPEAKER_FAULT_KILL_AT: node/adapters/faults.py), restart, and count
what the district receives; and a clean stop that leaves nothing unacknowledged."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from support import NodeProcess, district_probe, wait_until, write_node_config
from test_e2e_node import HARDWARE, NODE, marker_played, online, tone

from provisioning.district.content_server import ContentServer
from provisioning.district.simulator import DistrictSimulator


@pytest.fixture
def district(district_ws, broker, tmp_path):
    content = ContentServer(district_ws, tmp_path / "content").start()
    sim = DistrictSimulator(district_ws, broker.address)
    watcher = district_probe(broker, district_ws, client_id=f"k9-{os.getpid()}-{time.monotonic_ns()}")
    yield sim, content, watcher
    watcher.close()
    sim.close()
    content.stop()


def _config(tmp_path, district_ws, broker):
    return write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], extra=HARDWARE,
                             state_dir=tmp_path / "state")


def _records(watcher, content_id: str) -> dict[str, dict]:
    """Play records of content_id received so far, by id (the district keeps one per id)."""
    import json

    got = {}
    for topic, payload, _ in list(watcher.seen):
        if topic.endswith(f"{NODE}/events"):
            obj = json.loads(payload)
            if obj.get("kind") == "play" and obj.get("content_id") == content_id:
                got[obj["id"]] = obj
    return got


# fault point (docs/storage.md) -> the records the district ends with (by id), in order. A second play
# would show as a second record with another id.
EXPECTED = {
    "journal.warming:after": ["completed"],             # nothing aired: it plays after the restart, once
    "journal.sounding:after": ["failed", "completed"],  # interrupted (0 s aired), then played again
    "journal.ending:before": ["failed", "completed"],   # "ended" not stored yet: interrupted, played again
    "journal.ending:after": ["completed"],              # the record waits in the journal: stored at start
    "outbox.play:before": ["completed"],
    "outbox.play:after": ["completed"],                 # stored twice under one id: one record
    "journal.cleared:after": ["completed"],
}
QUICK = ("journal.ending:before", "journal.ending:after", "outbox.play:after")


@pytest.mark.parametrize("transition", [
    t if t in QUICK else pytest.param(t, marks=pytest.mark.slow) for t in EXPECTED])
def test_kill_9_at_each_on_air_transition_leaves_one_record_per_play(
        transition, district, district_ws, broker, tmp_path, python_exe):
    sim, content, watcher = district
    config = _config(tmp_path, district_ws, broker)
    content_id = f"k9-{transition.replace(':', '-').replace('.', '-')}"
    audio = tone(tmp_path / "k9.wav", 1.5)
    body = sim.play_body(audio, content.publish(audio), content_id=content_id)
    killed = NodeProcess(config, python_exe, env={"SPEAKER_FAULT_KILL_AT": transition})
    node = None
    try:
        online(watcher)
        sim.send("play", body, [NODE])
        assert killed.proc.wait(30) == -9             # it died at the transition
        point, when = transition.split(":")
        assert f"fault hook: SIGKILL {when} {point} write 1" in killed.log()
        node = NodeProcess(config, python_exe)
        results = EXPECTED[transition]
        wait_until(lambda: len(_records(watcher, content_id)) >= len(results), timeout=40)
        marker_played(sim, content, watcher, tmp_path)  # a wrong second play would be recorded before it
        records = sorted(_records(watcher, content_id).values(), key=lambda r: (r["ts"], r["result"] != "failed"))
        assert [r["result"] for r in records] == results, records
        if results[0] == "failed":
            assert records[0]["reason"] == "interrupted_by_restart" and records[0]["sha256"] == body["sha256"]
            assert records[0]["ended_at"] is not None
    finally:
        killed.close()
        if node is not None:
            node.terminate()
            node.close()


def test_clean_stop_waits_for_the_acknowledgement_of_its_last_records(
        district, district_ws, broker, tmp_path, python_exe):
    sim, content, watcher = district
    config = _config(tmp_path, district_ws, broker)
    node = NodeProcess(config, python_exe)
    try:
        online(watcher)
        audio = tone(tmp_path / "dai.wav", 20)
        sim.send("play", sim.play_body(audio, content.publish(audio), content_id="dang-phat"), [NODE])
        watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/delta") and (o.get("play") or {}).get("state") == "playing",
                         20)
        assert node.terminate() == 0                   # SIGTERM mid-play: a `stopped` record and `stopping`
    finally:
        node.close()
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        # every row reached the broker (PUBACK); the district's signed acknowledgement deletes them later
        assert db.execute("SELECT count(*) FROM outbox WHERE attempts = 0").fetchone()[0] == 0
    [stopped] = _records(watcher, "dang-phat").values()
    assert (stopped["result"], stopped["reason"]) == ("stopped", "shutdown")
