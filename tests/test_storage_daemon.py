"""Storage faults against the REAL daemon (tests/storage_harness.py): its state directory on a small
tmpfs that is filled, remounted read-only or damaged, and kill -9 at each state write. The node starts in
any storage state, plays what it can prove, says so (storage_fault, state_reset) and heals itself.

STORAGE_KILL_CYCLES sets the kill-at-every-write run's size (default: one per write kind, in CI's
`-m slow`); the long run is in README.md's "Long runs" table."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil

import pytest
from storage_harness import (
    FAULT_KINDS,
    NODE,
    SmallFs,
    Watcher,
    can_mount,
    garbage,
    node_config,
    quick_check,
    start,
    stored_birth,
    tone,
    wait_exit,
)

from provisioning.district.content_server import ContentServer
from provisioning.district.simulator import DistrictSimulator

needs_mount = pytest.mark.skipif(not can_mount(), reason="needs root to mount a small tmpfs")


@pytest.fixture
def district(district_ws, broker, tmp_path):
    content = ContentServer(district_ws, tmp_path / "content").start()
    sim = DistrictSimulator(district_ws, broker.address)
    watcher = Watcher(broker, district_ws, "storage")
    yield sim, content, watcher
    watcher.close()
    sim.close()
    content.stop()


@pytest.fixture
def small_fs(tmp_path):
    fs = SmallFs(tmp_path / "card", size="24m")
    yield fs
    fs.close()


def _play(sim, content, tmp_path, name: str, seconds: float = 0.6, level: str = "normal"):
    audio = tmp_path / f"{name}.wav"
    if not audio.exists():
        tone(audio, seconds)
    body = sim.play_body(audio, content.publish(audio), content_id=name, level=level)
    return sim.send("play", body, [NODE]), body


def _completed(watcher, content_id, timeout=30):
    watcher.wait(lambda: watcher.records(content_id=content_id, result="completed"), timeout)
    return list({r["id"]: r for r in watcher.records(content_id=content_id)}.values())  # re-sends share an id


def _degraded_run(tmp_path, district, small_fs, python_exe, broker, district_ws, break_it, repair):
    """First a healthy run that caches a clip; then break the medium, start again: degraded, still plays
    from the cache, reports; repair the medium: recovers by itself, and what it did while degraded
    (the accepted command id) is on disk afterwards."""
    sim, content, watcher = district
    cfg = node_config(tmp_path, district_ws, broker, small_fs.path / "state")
    node = start(cfg, python_exe)
    try:
        first = watcher.online()
        _, body = _play(sim, content, tmp_path, "truoc")
        _completed(watcher, "truoc")
        assert node.terminate() == 0
        break_it()
        node = start(cfg, python_exe)
        status = watcher.online(birth=first["birth"] + 1)
        assert set(status["storage"]) >= {"state", "outbox"} and "storage_fault" in status["alarms"]
        watcher.wait(lambda: {e["data"]["store"] for e in watcher.events("storage_fault")} >= {"state", "outbox"})
        faults = {e["data"]["store"]: e["data"] for e in watcher.events("storage_fault")}
        assert faults["state"]["action"] == faults["outbox"]["action"] == "degraded"
        # The same clip by a new command: it is in the cache, the node plays it while degraded.
        command = sim.command("play", dict(body, content_id="trong-khi"), [NODE])
        envelope = sim.sign(command)
        sim.send_envelope(envelope, [NODE])
        _completed(watcher, "trong-khi")
        repair()
        watcher.wait(lambda: {e["data"]["store"] for e in watcher.events("storage_recovered")} >= {"state", "outbox"})
        watcher.wait(lambda: watcher.storage_now() == [])
        assert node.terminate() == 0
        assert quick_check(small_fs.path / "state" / "state.db") == "ok"
        node = start(cfg, python_exe)
        watcher.online(birth=first["birth"] + 2)
        sim.send_envelope(envelope, [NODE])                 # accepted while degraded, merged back: a replay
        watcher.wait(lambda: watcher.rejections(command["id"]) == ["replayed"])
        assert len({r["id"] for r in watcher.records(content_id="trong-khi")}) == 1   # re-sends share an id
        assert node.terminate() == 0
        assert watcher.assert_schemas() > 10
    finally:
        node.close()
    return watcher


@needs_mount
def test_read_only_state_fs_starts_degraded_and_recovers(tmp_path, district, small_fs, python_exe, broker,
                                                        district_ws):
    watcher = _degraded_run(tmp_path, district, small_fs, python_exe, broker, district_ws,
                            small_fs.read_only, small_fs.read_write)
    faults = {e["data"]["store"]: e["data"]["reason"] for e in watcher.events("storage_fault")}
    assert faults["state"] == "read_only"


@needs_mount
def test_full_state_fs_at_start_starts_degraded_and_recovers(tmp_path, district, small_fs, python_exe, broker,
                                                            district_ws):
    watcher = _degraded_run(tmp_path, district, small_fs, python_exe, broker, district_ws,
                            small_fs.fill, small_fs.free)
    faults = {e["data"]["store"]: e["data"]["reason"] for e in watcher.events("storage_fault")}
    assert faults["state"] == "disk_full"


@needs_mount
def test_first_start_on_a_read_only_card_comes_online_degraded(tmp_path, district, small_fs, python_exe, broker,
                                                              district_ws):
    """Nothing on the card yet and it is read-only: no state directory can even be created. The node
    still starts (exit 78 is for configuration only), reports every store degraded, and heals."""
    sim, content, watcher = district
    small_fs.read_only()
    cfg = node_config(tmp_path, district_ws, broker, small_fs.path / "state")
    node = start(cfg, python_exe)
    try:
        status = watcher.online()
        assert set(status["storage"]) == {"state", "outbox", "cache"} and "storage_fault" in status["alarms"]
        small_fs.read_write()
        watcher.wait(lambda: watcher.storage_now() == [])
        assert node.terminate() == 0
        assert quick_check(small_fs.path / "state" / "state.db") == "ok"
    finally:
        node.close()


def test_an_os_error_at_start_exits_75_which_the_unit_restarts_never_78(tmp_path, monkeypatch, capsys):
    from node import daemon, wiring

    def unwritable_runtime_dir(cfg):
        raise PermissionError(13, "Permission denied", "/run/speaker-node/daemon.lock")

    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "27787-01"\n[broker]\nservers = ["127.0.0.1:8883"]\n'
                   f'[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setattr(wiring, "hold_daemon_lock", unwritable_runtime_dir)  # NodeApp's first step
    assert daemon.main(["--config", str(cfg)]) == 75
    assert "cannot start yet" in capsys.readouterr().err


def test_garbage_state_db_at_start_still_plays_the_stored_schedule(tmp_path, district, python_exe, broker,
                                                                  district_ws):
    """state.db and cache.db replaced by random bytes while the node was off: both are moved aside and
    rebuilt (the schedule from the safe copy, verified again; the index from the verified files) and the
    programme plays at its time."""
    sim, content, watcher = district
    state = tmp_path / "state"
    cfg = node_config(tmp_path, district_ws, broker, state)
    audio = tone(tmp_path / "chuong-trinh.wav", 1.0)
    node = start(cfg, python_exe)
    try:
        watcher.online()
        at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=25)
        entry = {k: v for k, v in sim.play_body(audio, content.publish(audio), content_id="chuong-trinh").items()
                 if k in ("content_id", "sha256", "length", "duration", "codec", "url")}
        sim.send("schedule", {"version": 3, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
            {"id": "trua", "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 30, "level": "normal",
             "volume": 60, "playlist": [entry]}]}, [NODE])
        watcher.wait(lambda: list((state / "cache").glob("*/*.bin")), 20)     # prefetched
        assert node.terminate() == 0
        garbage(state / "state.db")
        garbage(state / "cache.db")
        node = start(cfg, python_exe)
        watcher.online(timeout=20)
        records = _completed(watcher, "chuong-trinh", timeout=60)
        assert [(r["source"], r["result"]) for r in records] == [("schedule", "completed")]
        rebuilt = {e["data"]["store"]: e["data"] for e in watcher.events("storage_fault")}
        assert rebuilt["state"]["action"] == rebuilt["cache"]["action"] == "rebuilt"
        assert rebuilt["cache"]["files"] == 1 and rebuilt["cache"]["damaged"] == 0
        assert watcher.events("state_reset")[0]["data"]["reason"] == "state_corrupt"
        assert list(state.glob("state.db.corrupt-*")) and list(state.glob("cache.db.corrupt-*"))
        assert node.terminate() == 0
        assert watcher.assert_schemas() > 10
    finally:
        node.close()


def test_deleting_state_db_does_not_let_a_revoked_key_back_in(tmp_path, fresh_broker, district_ws, python_exe):
    from provisioning.district.workspace import Workspace, bump_trust

    # A broker of its own: the trust update below revokes the district's bulletin key, and on the shared
    # broker the persistent sessions of the other tests' nodes would keep it for their next start.
    broker = fresh_broker

    ws = tmp_path / "district"
    shutil.copytree(district_ws, ws)          # a private copy: this test revokes a key
    content = ContentServer(ws, tmp_path / "content").start()
    sim = DistrictSimulator(ws, broker.address)
    watcher = Watcher(broker, ws, "revoke")
    state = tmp_path / "state"
    cfg = node_config(tmp_path, ws, broker, state)
    node = start(cfg, python_exe)
    try:
        watcher.online()
        old_bulletin = Workspace.load(ws).key("bulletin")
        played_id, _ = _play(sim, content, tmp_path, "da-phat", level="emergency")   # keys that stay good
        played = sim.sign(sim.sent[-1])
        _completed(watcher, "da-phat")
        v1 = (ws / "trust.json").read_bytes()
        sim.send_trust(bump_trust(ws, revoke=["bulletin"], add_keys={"bulletin-2": ["bulletin", "live"]}))
        watcher.wait(lambda: watcher.events("trust_updated"))
        assert node.terminate() == 0
        (ws / "trust.json").write_bytes(v1)   # the card's provisioned trust file is still version 1
        for suffix in ("", "-wal", "-shm"):
            (state / f"state.db{suffix}").unlink(missing_ok=True)
        node = start(cfg, python_exe)
        watcher.online(timeout=20)
        watcher.wait(lambda: watcher.events("state_reset"))
        audio = tone(tmp_path / "gia.wav", 0.6)
        forged_by_revoked = sim.command("play", sim.play_body(audio, content.publish(audio), content_id="gia"),
                                        [NODE])
        sim.send_envelope(sim.sign(forged_by_revoked, keys=[old_bulletin]), [NODE])
        # (refused before its payload is read, so the event names the key, not the command)
        watcher.wait(lambda: [e for e in watcher.events("rejected") if e["data"]["reason"] == "revoked_key"])
        sim.send_envelope(played, [NODE])     # the bulletin it already played, replayed
        watcher.wait(lambda: watcher.rejections(played_id))
        assert watcher.rejections(played_id) == ["issued_before_reset"]
        # A marker bulletin signed with the key that replaced the revoked one: the node plays in the order
        # it accepts, so once the marker is recorded anything wrongly accepted above has played too.
        marker = tone(tmp_path / "marker.wav", 0.3)
        body = sim.play_body(marker, content.publish(marker), content_id="marker")
        # (issued times are whole seconds: one issued in the reset's own second would count as before it)
        sim.send("play", body, [NODE], keys=[Workspace.load(ws).key("bulletin-2")],
                 issued_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1))
        _completed(watcher, "marker")
        assert len({r["id"] for r in watcher.records(content_id="da-phat")}) == 1
        assert watcher.records(content_id="gia") == []
        assert node.terminate() == 0
    finally:
        node.close()
        watcher.close()
        sim.close()
        content.stop()


def _cycles() -> list[tuple[str, int]]:
    """(write kind, N): every kind at its 1st, 2nd, 3rd... write, round-robin, STORAGE_KILL_CYCLES long."""
    count = int(os.environ.get("STORAGE_KILL_CYCLES", len(FAULT_KINDS)))
    return [(FAULT_KINDS[i % len(FAULT_KINDS)], 1 + i // len(FAULT_KINDS)) for i in range(count)]


@pytest.mark.slow
@pytest.mark.timeout(120 + 60 * len(_cycles()))   # a cycle is 3-15 s; the suite's 300 s cap is for one test
def test_kill_9_at_every_state_write_loses_no_command_and_replays_none(tmp_path, district, python_exe, broker,
                                                                      district_ws):
    """For each (kind, N): the daemon kills itself right before its N-th write of that kind while a play
    command arrives; restarted without the hook it must start, every accepted command must end in a
    record, re-sending it must be refused, and state.db must pass quick_check."""
    sim, content, watcher = district
    state = tmp_path / "state"
    cfg = node_config(tmp_path, district_ws, broker, state)
    stats = {"killed": 0, "not_reached": 0, "double_records": 0}
    for index, (kind, nth) in enumerate(_cycles()):
        where = f"cycle {index} kill before {kind} write {nth}"
        birth = stored_birth(state)
        node = start(cfg, python_exe, fault=f"{kind}:{nth}")
        try:
            if wait_exit(node, 0.5) is None:
                try:
                    watcher.online_after(birth, timeout=20)
                except TimeoutError:
                    pass
            command_id = schedule = None
            if node.proc.poll() is None:
                command_id, _ = _play(sim, content, tmp_path, f"c{index}")
                envelope = sim.sign(sim.sent[-1])
                # and a new schedule version (a document write) behind it
                sim.send("schedule", {"version": index + 1, "timezone": "Asia/Ho_Chi_Minh", "slots": []}, [NODE])
                schedule = sim.sign(sim.sent[-1])
            code = wait_exit(node, 8)
            if code is None:
                stats["not_reached"] += 1
                node.kill9()
            else:
                stats["killed"] += 1
                assert code == -9, (where, code, node.log()[-2000:])
        finally:
            node.close()
        birth = stored_birth(state)
        node = start(cfg, python_exe)
        try:
            watcher.online_after(birth, timeout=30)
            if command_id:
                sim.send_envelope(envelope, [NODE])       # accepted before the kill -> replayed; else plays now
                watcher.wait(lambda: watcher.records(command_id=command_id) and watcher.rejections(command_id)
                             or watcher.records(command_id=command_id, result="completed"), 40)
                sim.send_envelope(envelope, [NODE])
                watcher.wait(lambda: "replayed" in watcher.rejections(command_id), 20)
                done = watcher.records(command_id=command_id, result="completed")
                stats["double_records"] += len({r["id"] for r in done}) > 1
                schedule_id = json.loads(base64.b64decode(json.loads(schedule)["payload"]))["id"]
                sim.send_envelope(schedule, [NODE])   # applied before the kill -> replayed; else applied now
                sim.send_envelope(schedule, [NODE])
                watcher.wait(lambda: "replayed" in watcher.rejections(schedule_id), 20)
            assert node.terminate() == 0, where
        finally:
            node.close()
        assert quick_check(state / "state.db") == "ok", where
    print(f"kill cycles: {len(_cycles())} {stats}")
