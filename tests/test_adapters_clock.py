"""The clock adapters at the edge: the NTP flag and the RTC are read only from the files node.toml names
(never the host's by default in simulation), and the floor file survives torn or foreign contents."""

from __future__ import annotations

import datetime as dt

from node.adapters.floorfile import FILE_BYTES, SLOT_BYTES, FloorFile
from node.adapters.system_clock import SystemClock
from node.config import validate

UTC = dt.timezone.utc


def test_no_ntp_flag_configured_means_never_synchronised_even_if_the_host_is(tmp_path):
    assert SystemClock("").ntp_synchronized() is False
    flag = tmp_path / "synchronized"
    clock = SystemClock(str(flag))
    assert clock.ntp_synchronized() is False
    flag.touch()
    assert clock.ntp_synchronized() is True


def test_rtc_reads_seconds_since_the_epoch_and_nonsense_is_no_rtc(tmp_path):
    rtc = tmp_path / "since_epoch"
    rtc.write_text("1796170000\n")
    assert SystemClock(rtc_file=str(rtc)).rtc() == dt.datetime.fromtimestamp(1796170000, UTC)
    for junk in ("", "soon", "9" * 40):
        rtc.write_text(junk)
        assert SystemClock(rtc_file=str(rtc)).rtc() is None
    assert SystemClock(rtc_file=str(tmp_path / "absent")).rtc() is None
    assert SystemClock().rtc() is None


def test_a_simulated_node_reads_neither_the_hosts_ntp_flag_nor_its_rtc(tmp_path):
    sim = validate({"node": {"id": "27787-01", "groups": ["c27787"], "simulate": True},
                    "broker": {"servers": ["127.0.0.1:1"]}, "trust": {"file": str(tmp_path / "t.json")},
                    "storage": {"state_dir": str(tmp_path / "s")}})
    assert (sim.clock.ntp_sync_file, sim.clock.rtc_file) == ("", "")
    real = validate({"node": {"id": "27787-01", "groups": ["c27787"]}, "broker": {"servers": ["10.0.0.1:8883"]},
                     "trust": {"file": str(tmp_path / "t.json")}, "storage": {"state_dir": str(tmp_path / "s")},
                     "clock": {"wall_offset": 3600}})
    assert real.clock.ntp_sync_file == "/run/systemd/timesync/synchronized"
    assert real.clock.wall_offset == 0.0          # a simulation knob only


def test_floor_file_round_trips_in_two_fixed_slots(tmp_path):
    floor_file = FloorFile(tmp_path / "time-floor")
    assert floor_file.load() is None
    first = dt.datetime(2026, 12, 2, 1, 0, 0, 123456, tzinfo=UTC)
    for n in range(5):
        floor_file.save(first + dt.timedelta(minutes=10 * n))
    assert floor_file.load() == first + dt.timedelta(minutes=40)
    assert FloorFile(tmp_path / "time-floor").load() == first + dt.timedelta(minutes=40)   # a new process
    assert (tmp_path / "time-floor").stat().st_size == FILE_BYTES   # overwritten in place, never grows


def test_a_save_torn_anywhere_falls_back_to_the_previous_save_never_to_a_mixed_value(tmp_path):
    path = tmp_path / "time-floor"
    old = dt.datetime(2026, 12, 31, 23, 55, tzinfo=UTC)
    new = dt.datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    FloorFile(path).save(old)
    before = path.read_bytes()
    FloorFile(path).save(new)
    after = path.read_bytes()
    for cut in range(1, FILE_BYTES):                  # the power fails after `cut` bytes of the new save
        path.write_bytes(after[:cut] + before[cut:])
        assert FloorFile(path).load() in (old, new), cut


def test_a_torn_or_foreign_floor_file_is_no_floor(tmp_path):
    path = tmp_path / "time-floor"
    for junk in (b"", b"\x00" * FILE_BYTES, b"2026-12-02T01:00", b"2026-12-02T01:00:00+00:00\n", b"\xff\xfe",
                 b"0000000000000001 2027-12-31T23:55:00+00:00 00000000".ljust(SLOT_BYTES)):
        path.write_bytes(junk)
        assert FloorFile(path).load() is None      # start from the state store / build floor instead
