"""The node's own fences (issue 13, items 3, 6, 7): what remote text, a hostile network or a tampered
SD card can no longer do. Real daemon, real broker, real TLS where that is what the attack goes through."""

from __future__ import annotations

import json
import logging
import os
import stat
import time

import pytest
from support import NodeProcess, district_probe, wait_until, write_node_config

from node.logsafe import EscapingFormatter, escape_controls
from provisioning.district.simulator import DistrictSimulator

NODE = "27787-02"


@pytest.fixture
def district(district_ws, broker):
    sim = DistrictSimulator(district_ws, broker.address)
    watcher = district_probe(broker, district_ws, client_id=f"fence-{os.getpid()}-{time.monotonic_ns()}")
    yield sim, watcher
    watcher.close()
    sim.close()


def online(watcher, birth=None):
    return watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online") is True
                            and (birth is None or o["birth"] == birth), timeout=20)[1]


def rejected(watcher, predicate, timeout=15):
    return watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o and o.get("type") == "rejected"
                            and predicate(o["data"]), timeout=timeout)[1]["data"]


# --- item 7: log lines and file modes -------------------------------------------------------------------

def test_control_characters_in_remote_text_are_escaped():
    assert escape_controls("ab\ncd\r\x1b[31m\x00\u2028\x85") == "ab\\x0acd\\x0d\\x1b[31m\\x00\\u2028\\x85"
    assert escape_controls("Thông báo khẩn") == "Thông báo khẩn"  # Vietnamese text stays readable


def test_traceback_lines_are_marked_as_continuation():
    formatter = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("remote said\nINFO node: forged")
    except ValueError:
        record = logging.LogRecord("node.x", logging.ERROR, __file__, 1, "handler failed on %s", ("k\ney",),
                                   exc_info=__import__("sys").exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0] == "ERROR node.x: handler failed on k\\x0aey"
    assert all(line.startswith("| ") for line in lines[1:]) and len(lines) > 2


def test_keyid_with_a_newline_cannot_forge_a_log_line_and_files_are_private_whatever_the_umask(
        district, district_ws, broker, tmp_path, python_exe):
    """The daemon started from a shell with umask 000: its state, cache and status are still 0700/0600.
    A signed-looking envelope whose keyid carries a newline and a fake log line: one escaped line."""
    sim, watcher = district
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], state_dir=tmp_path / "state")
    old_umask = os.umask(0)
    try:
        node = NodeProcess(cfg, python_exe)
    finally:
        os.umask(old_umask)
    try:
        online(watcher)
        envelope = json.loads(sim.sign(sim.command("stop", {"content_id": None, "level": "normal", "all": False},
                                                   [NODE])))
        forged = "\nINFO node.service.intake: accepted play FORGED"
        envelope["signatures"][0]["keyid"] = "ab" + forged
        sim.publish_raw(f"spk/node/{NODE}/cmd", json.dumps(envelope).encode())
        data = rejected(watcher, lambda d: d["reason"] == "unknown_key")
        assert data["keyid"] == "ab" + forged  # the district gets the exact text, as JSON
        lines = node.wait_log("rejected message").splitlines()  # may be written just after the event is sent
        assert not [line for line in lines if line.startswith("INFO node.service.intake: accepted play")]
        assert [line for line in lines if "rejected message" in line and "ab\\x0aINFO" in line], lines[-5:]

        state = tmp_path / "state"
        wait_until(lambda: (state / "run" / "status.json").exists())  # written after the first status
        expect = {state: 0o700, state / "state.db": 0o600, state / "outbox.db": 0o600, state / "cache.db": 0o600,
                  state / "cache": 0o700, state / "run": 0o700, state / "run" / "status.json": 0o600}
        modes = {path: stat.S_IMODE(path.stat().st_mode) for path in expect}
        assert modes == expect
    finally:
        assert node.terminate() == 0
        node.close()


# --- item 6: what is read back from local storage is verified again --------------------------------------

def _journal(state_db, command_id: str, envelope: bytes) -> None:
    """Write a journal row the way intake does (play commands waiting to be played), daemon stopped."""
    import base64
    import sqlite3

    db = sqlite3.connect(state_db)
    with db:
        db.execute("INSERT OR REPLACE INTO journal(slot, payload) VALUES(?, ?)",
                   (f"cmd:{command_id}", json.dumps({"envelope": base64.b64encode(envelope).decode()})))
    db.close()


def test_forged_envelope_in_journal_does_not_play_after_restart(district, district_ws, broker, tmp_path, python_exe):
    """Someone with the SD card plants an emergency with all-zero signatures in state.db's journal
    (next to a genuine one the node had accepted): after the restart only the genuine one plays, and
    the node reports why the other did not."""
    import base64

    from test_e2e_node import marker_played, tone

    from provisioning.district.content_server import ContentServer

    sim, watcher = district
    content = ContentServer(district_ws, tmp_path / "content").start()
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], state_dir=tmp_path / "state")
    node = NodeProcess(cfg, python_exe)
    try:
        first = online(watcher)
        assert node.terminate() == 0
        node.close()
        audio = tone(tmp_path / "khan-cap.wav", 1.0)
        genuine = sim.command("play", sim.play_body(audio, content.publish(audio), level="emergency",
                                                    content_id="khan-cap-that"), [NODE])
        forged_cmd = sim.command("play", sim.play_body(audio, content.publish(audio), level="emergency",
                                                       content_id="khan-cap-gia"), [NODE])
        forged = json.loads(sim.sign(forged_cmd))
        for signature in forged["signatures"]:
            signature["sig"] = base64.b64encode(bytes(64)).decode()
        _journal(tmp_path / "state" / "state.db", genuine["id"], sim.sign(genuine))
        _journal(tmp_path / "state" / "state.db", forged_cmd["id"], json.dumps(forged).encode())

        node = NodeProcess(cfg, python_exe)
        online(watcher, first["birth"] + 1)
        _, ev = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events")
                                 and o.get("type") == "stored_envelope_refused", timeout=15)
        assert ev["data"]["store"] == "journal" and ev["data"]["reason"] == "bad_signature"
        assert ev["data"]["command_id"] == forged_cmd["id"]
        _, record = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o.get("kind") == "play",
                                     timeout=30)
        assert record["command_id"] == genuine["id"] and record["result"] == "completed"
        marker = marker_played(sim, content, watcher, tmp_path)  # anything else queued has played by now
        plays = [json.loads(p) for t, p, _ in watcher.seen if t.endswith("/events") and b'"kind":"play"' in p]
        assert [p["command_id"] for p in plays] == [genuine["id"], marker["command_id"]]
        assert len(list((tmp_path / "state" / "wav").glob("*.wav"))) == 2
    finally:
        node.terminate()
        node.close()
        content.stop()


def _state_db(path, sql: str, params=()):
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        rows = db.execute(sql, params).fetchall()
    db.close()
    return rows


def test_config_setting_written_into_state_db_is_not_applied_at_restart(
        district, district_ws, broker, tmp_path, python_exe):
    """Someone with the SD card, node off, points the node at their own broker and turns the volume up:
    once as merged settings written straight into state.db's kv, once as a config envelope with zeroed
    signatures planted among the kept ones. After the restart the node still talks to the district's
    broker (a forged broker.servers would keep it offline), only the genuine config the district sent
    is in force, and the planted envelope is reported as stored_envelope_refused."""
    import base64

    sim, watcher = district
    state_db = tmp_path / "state" / "state.db"
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], state_dir=tmp_path / "state")
    node = NodeProcess(cfg, python_exe)
    try:
        first = online(watcher)
        genuine = sim.send("config", {"version": 1, "settings": {"audio.default_volume": 40}}, [NODE])
        watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o.get("type") == "config_applied"
                         and o["data"]["command_id"] == genuine, timeout=15)
        assert node.terminate() == 0
        node.close()

        hostile = {"broker.servers": ["127.0.0.1:9"], "audio.default_volume": 100}
        forged_cmd = sim.command("config", {"version": 2, "settings": hostile}, [NODE])
        forged = json.loads(sim.sign(forged_cmd))
        for signature in forged["signatures"]:
            signature["sig"] = base64.b64encode(bytes(64)).decode()
        [(kept,)] = _state_db(state_db, "SELECT value FROM kv WHERE key='config_envelopes'")
        kept = json.loads(kept)
        assert [e["version"] for e in kept] == [1]
        kept.append({"version": 2, "keys": sorted(hostile), "id": forged_cmd["id"],
                     "envelope": base64.b64encode(json.dumps(forged).encode()).decode()})
        _state_db(state_db, "UPDATE kv SET value=? WHERE key='config_envelopes'", (json.dumps(kept),))
        _state_db(state_db, "UPDATE kv SET value=? WHERE key='config_overlay'",
                  (json.dumps({**hostile, "relays.warmup": 0.0}),))

        node = NodeProcess(cfg, python_exe)
        online(watcher, first["birth"] + 1)   # not sent to 127.0.0.1:9
        _, ev = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events")
                                 and o.get("type") == "stored_envelope_refused", timeout=15)
        assert ev["data"]["store"] == "config" and ev["data"]["reason"] == "bad_signature"
        assert ev["data"]["command_id"] == forged_cmd["id"]
        assert node.terminate() == 0
        node.close()
        [(overlay,)] = _state_db(state_db, "SELECT value FROM kv WHERE key='config_overlay'")
        assert json.loads(overlay) == {"audio.default_volume": 40}   # what is in force: the genuine one only
        refusals = [json.loads(p) for t, p, _ in watcher.seen
                    if t.endswith("/events") and b'"stored_envelope_refused"' in p]
        assert len({r["id"] for r in refusals}) == 1   # the genuine envelope verified (resends share the id)
    finally:
        node.terminate()
        node.close()
