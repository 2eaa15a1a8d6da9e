"""Faults on air, on virtual time with the real loop, store and outbox: the live judge's branches, a power
cut at every storage write after a bulletin ends (one play, one record), interrupted records that name
what aired, a full disk while running, an item stuck on air stopping the watchdog, and a part failing
in construction unwinding the ones already built."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from gpiozero.pins.mock import MockFactory
from onair_harness import T0, VirtualNode

from node.adapters.broker import FakeBroker
from node.wiring import build_app

AMP = 17


@pytest.fixture
def node(tmp_path, district_ws):
    n = VirtualNode(tmp_path, district_ws)
    yield n
    n.close()


def _results(records):
    return [(r["content_id"], r["result"], r["reason"]) for r in records]


# --- the live judge (OnAir._judge), branch by branch ------------------------------------------------------
def test_relay_feedback_open_at_the_end_fails_the_bulletin_as_relay_feedback_mismatch(node):
    node.play(node.clip("phan-hoi", 5))
    node.run(3)
    node.app.health.inputs["relay_feedback"] = False  # the contactor did not close (what OnAir reads)
    node.run(10)
    assert _results(node.records()) == [("phan-hoi", "failed", "relay_feedback_mismatch")]
    assert node.app.onair.failed_to_sound == "relay_feedback_mismatch"


def test_relay_feedback_closed_completes(node):
    node.app.health.inputs["relay_feedback"] = True
    node.play(node.clip("dong", 5))
    node.run(10)
    assert _results(node.records()) == [("dong", "completed", None)]


def test_amp_fault_active_when_the_bulletin_started_fails_it_even_after_it_cleared(node):
    node.app.health.inputs["amp_fault"] = True
    node.play(node.clip("loi-amp", 5))
    node.run(3)
    node.app.health.inputs["amp_fault"] = False
    node.run(10)
    assert _results(node.records()) == [("loi-amp", "failed", "amp_fault")]


def test_player_error_on_a_bulletin_fails_it_with_the_player_detail(node):
    node.player.answering = False  # libVLC: open_failed after about a second
    node.play(node.clip("hong", 5))
    node.run(10)
    assert _results(node.records()) == [("hong", "failed", "player_error:open_failed")]


# --- one play, one record: a power cut at every write after a bulletin ends ----------------------------------
class PowerCut(BaseException):
    """Raised inside a storage write: the process dies there (BaseException passes every handler)."""


def _cut_at(app, n: int, after: bool):
    """Die at the n-th state.db/outbox.db write from now, before it commits or right after."""
    count, names = [0], []
    targets = [(app.store, "journal_apply"), (app.store, "accept_command"), (app.outbox, "add"),
               (app.outbox, "acked_many"), (app.outbox, "mark_sent_many")]
    for owner, name in targets:
        real = getattr(owner, name)

        def write(*args, _real=real, _name=name, **kw):
            count[0] += 1
            names.append(_name)
            if count[0] == n and not after:
                raise PowerCut
            result = _real(*args, **kw)
            if count[0] == n and after:
                raise PowerCut
            return result
        setattr(owner, name, write)
    return count, names


@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_power_cut_at_any_write_after_a_bulletin_ends_never_plays_it_again(tmp_path, district_ws, n, after):
    node = VirtualNode(tmp_path, district_ws)
    clip = node.clip("ban-tin", 5)
    node.play(clip)
    node.run(2 + 5 - 0.01)                      # warm-up 2 s, then 5 s of bulletin: just before its end
    assert node.player.played() and not node.records()
    writes, names = _cut_at(node.app, n, after)
    try:
        node.run(30)
        cut = False
    except PowerCut:
        cut = True
    clock = node.clock
    node.app.close()                            # the power is gone: no shutdown, nothing more written
    assert cut or writes[0] < n
    clock.advance(20)
    again = VirtualNode(tmp_path, district_ws, clock=clock, state_dir=node.state_dir)
    again.durations.update(node.durations)
    try:
        again.run(60)
        records = {r["id"]: r for r in node.records() + again.records()}.values()  # the district keeps one per id
        assert names[0] == "journal_apply"      # the first write after the end: ENDING, the command forgotten
        if n == 1 and not after:
            # Cut before "ended" was stored: to the node it never finished (the audio's last instant).
            # It is recorded as interrupted and plays again once: still one completed record.
            assert len(again.player.played()) == 1
            assert _results(records) == [("ban-tin", "failed", "interrupted_by_restart"),
                                         ("ban-tin", "completed", None)]
        else:
            assert again.player.played() == []  # never played a second time
            assert _results(records) == [("ban-tin", "completed", None)]
    finally:
        again.close()


# --- interrupted records name what aired ------------------------------------------------------------------
def _power_cut_and_restart(node, tmp_path, district_ws, off_for=30):
    clock = node.clock
    node.app.loop.stop()
    node.app.close()
    clock.advance(off_for)
    again = VirtualNode(tmp_path, district_ws, clock=clock, state_dir=node.state_dir)
    again.durations.update(node.durations)
    return again


def test_power_cut_mid_slot_records_the_clip_on_air_its_sha256_seconds_and_end_time(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    first, second = node.clip("mo-dau", 30), node.clip("chuong-trinh", 600)
    start = T0 + dt.timedelta(seconds=10)
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
        {"id": "sang", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 900, "level": "normal",
         "volume": None, "playlist": [first, second]}]}, valid_for=86400)
    node.run(10 + 30 + 95)                      # 95 s into the second entry
    again = _power_cut_and_restart(node, tmp_path, district_ws)
    try:
        again.run(5)
        interrupted = [r for r in again.records() if r["reason"] == "interrupted_by_restart"]
        assert len(interrupted) == 1
        rec = interrupted[0]
        assert (rec["content_id"], rec["sha256"]) == ("chuong-trinh", second["sha256"])
        assert rec["slot_id"] == f"sang@{start.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        assert 85 <= rec["seconds"] <= 95          # up to the last progress mark (every 10 s)
        assert rec["ended_at"] == pytest.approx(rec["started_at"] + rec["seconds"], abs=0.01)
        assert rec["started_at"] == pytest.approx(start.timestamp() + 30, abs=0.5)
        # the first entry was recorded completed before the cut, and not again
        assert [r["content_id"] for r in node.records()] == ["mo-dau"]
    finally:
        again.close()


def test_power_cut_a_second_into_a_bulletin_records_its_seconds_and_end_time(tmp_path, district_ws):
    node = VirtualNode(tmp_path, district_ws)
    clip = node.clip("canh-bao", 60)
    node.play(clip, level="emergency")
    node.run(2 + 1.2)                           # warm-up, then 1.2 s on air
    again = _power_cut_and_restart(node, tmp_path, district_ws)
    try:
        again.run(1)
        [rec] = [r for r in again.records() if r["reason"] == "interrupted_by_restart"]
        assert (rec["content_id"], rec["sha256"], rec["level"]) == ("canh-bao", clip["sha256"], "emergency")
        assert rec["seconds"] == pytest.approx(1.0, abs=0.01) and rec["ended_at"] is not None
        again.run(120)                          # the emergency plays again, once, to its end
        assert _results(again.records())[-1] == ("canh-bao", "completed", None)
    finally:
        again.close()


# --- a full disk while running ----------------------------------------------------------------------------
class DiskFull:
    """Every state.db and outbox.db write fails like SQLITE_FULL while `full` is set."""

    def __init__(self, app):
        self.full = False
        for owner, names in ((app.store, ("journal_apply", "accept_command", "put", "store_document",
                                          "remember", "forget_expired")),
                             (app.outbox, ("add", "acked_many", "mark_sent_many", "requeue_inflight"))):
            for name in names:
                setattr(owner, name, self._guard(getattr(owner, name)))

    def _guard(self, real):
        def write(*args, **kw):
            if self.full:
                raise sqlite3.OperationalError("database or disk is full")
            return real(*args, **kw)
        return write


def _schedule_every(node, minutes: int, count: int, clip: dict, first: dt.datetime):
    once = [{"id": f"s{i}", "at": (first + dt.timedelta(minutes=minutes * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "duration": 60, "level": "normal", "volume": None, "playlist": [clip]} for i in range(count)]
    node.send("schedule", {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": once},
              valid_for=86400)


def test_full_disk_while_running_keeps_playing_never_sticks_on_air_and_reports_when_space_returns(node):
    clip = node.clip("tin-gio", 20)
    bulletin = node.clip("khan", 10)
    first = T0 + dt.timedelta(minutes=1)
    _schedule_every(node, 2, 4, clip, first)
    disk = DiskFull(node.app)
    node.run(30)
    disk.full = True                              # the state filesystem fills up
    node.run_until(first + dt.timedelta(minutes=3, seconds=30))   # slots 1 and 2 under a full disk
    node.play(bulletin)                           # a bulletin arrives while the disk is full
    node.run(60)
    status = node.app.collect()
    assert status["unstored"] >= 3 and node.app.onair.on is None
    published = _results(node.records())
    disk.full = False                             # space returns
    node.run_until(first + dt.timedelta(minutes=8))
    played = [r for r in node.records() if r["result"] == "completed"]
    assert [r["content_id"] for r in played] == ["tin-gio", "tin-gio", "khan", "tin-gio", "tin-gio"]
    assert len(published) < len(node.records())   # the unstored ones were sent once space returned
    [recovered] = node.events("storage_recovered")
    assert recovered["data"]["records"] >= 3 and recovered["data"]["lost"] == 0
    assert recovered["data"]["journal"] >= 1
    assert node.app.collect()["unstored"] == 0
    assert not any(r["reason"] == "expired" for r in node.records())


# --- the watchdog pings only while on-air makes progress ------------------------------------------------------
class RecordingNotifier:
    def __init__(self):
        self.pings = 0

    def watchdog_interval(self):
        return 5.0

    def watchdog(self):
        self.pings += 1
        return True

    def ready(self, status=""):
        return True

    def status(self, text):
        return True

    def stopping(self):
        return True


def test_an_item_stuck_on_air_stops_the_watchdog_pings(tmp_path, district_ws):
    notifier = RecordingNotifier()
    node = VirtualNode(tmp_path, district_ws, notifier=notifier)
    try:
        node.player.play = lambda *a, **kw: None   # a player that takes the media and never says a word
        node.play(node.clip("im-lang", 10))
        node.run(30)
        assert node.app.onair.stuck(node.clock.monotonic()) is None
        healthy = notifier.pings
        assert healthy >= 5
        node.run(90)                               # STARTING for far longer than 60 s
        assert "starting" in node.app.onair.stuck(node.clock.monotonic())
        stalled = notifier.pings
        node.run(60)
        assert notifier.pings == stalled
    finally:
        node.close()


def test_a_long_bulletin_playing_normally_keeps_the_watchdog_pinged(tmp_path, district_ws):
    notifier = RecordingNotifier()
    node = VirtualNode(tmp_path, district_ws, notifier=notifier)
    try:
        node.play(node.clip("dai", 600))
        node.run(300)
        before = notifier.pings
        node.run(300)
        assert notifier.pings >= before + 55 and node.app.onair.stuck(node.clock.monotonic()) is None
    finally:
        node.close()


# --- one linear start: a part failing in construction unwinds the ones already built ---------------------------
def test_a_part_failing_in_construction_closes_the_parts_already_built_and_relays_end_off(tmp_path, district_ws):
    from node.config import load_config
    from node.errors import ConfigError

    node = VirtualNode(tmp_path, district_ws)
    node.close()
    # The modem is built after the relays, inputs, player, cache and outbox: a simulated modem port on a
    # node that is not simulated is refused there.
    cfg = load_config(node.config_path).with_values(node={"simulate": False}, modem={"enabled": True, "port": "sim"})
    pins = MockFactory()
    with pytest.raises(ConfigError, match="modem.port"):
        build_app(cfg, clock=node.clock, make_broker=lambda **kw: FakeBroker(**kw), pin_factory=pins)
    assert not pins.pin(AMP).state              # relays off
    # Everything built before the failure was released: the daemon lock, the state database, the pins
    # (gpiozero refuses a pin still held), the outbox.
    app = build_app(node.cfg, clock=node.clock, make_broker=lambda **kw: FakeBroker(**kw), pin_factory=pins)
    app.close()
