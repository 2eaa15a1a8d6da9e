"""Host readers against a fake sysfs/procfs tree: right values, and None (never an exception) when absent."""

import datetime as dt
import os

from node.reporting import system

MEMINFO = """MemTotal:        3884328 kB
MemFree:          211340 kB
MemAvailable:    2913246 kB
Buffers:           80220 kB
"""


def make_tree(root, *, temp="48312\n", throttled="50005\n", meminfo=MEMINFO, uptime="98765.43 190000.1\n",
              loadavg="0.42 0.30 0.20 1/234 5678\n", synced=True):
    files = {
        system.THERMAL_ZONE: temp,
        system.THROTTLED_SYSFS: throttled,
        "proc/meminfo": meminfo,
        "proc/uptime": uptime,
        "proc/loadavg": loadavg,
    }
    for rel, text in files.items():
        if text is not None:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    flag = root / "run/systemd/timesync/synchronized"   # what timesyncd writes on a host
    flag.parent.mkdir(parents=True, exist_ok=True)
    if synced:
        flag.write_text("")
    return root


def test_throttled_0x50005_decodes_to_undervoltage_now_and_occurred_and_throttled(tmp_path):
    make_tree(tmp_path)
    bits = system.throttled_bits(tmp_path)
    assert bits == 0x50005
    assert system.decode_throttled(bits) == [
        "undervoltage", "throttled", "undervoltage_occurred", "throttled_occurred"]


def test_vcgencmd_output_parses_like_sysfs():
    assert system.parse_throttled("throttled=0x50005\n") == 0x50005
    assert system.parse_throttled("0x0") == 0
    assert system.parse_throttled("throttled=garbage") is None
    assert system.decode_throttled(0x8) == ["soft_temp_limit"]
    assert system.decode_throttled(0xF000F) == [name for _, name in sorted(system.THROTTLE_BITS.items())]


def test_vcgencmd_is_not_run_against_a_fake_root(tmp_path):
    calls = []
    assert system.throttled_bits(tmp_path, run_vcgencmd=lambda: calls.append(1) or "throttled=0x1") is None
    assert calls == []


def test_readings_from_fake_tree(tmp_path):
    make_tree(tmp_path)
    assert system.cpu_temp_c(tmp_path) == 48.3
    assert system.memory_available_pct(tmp_path) == 75
    assert system.uptime_s(tmp_path) == 98765
    assert system.load_1m(tmp_path) == 0.42


def test_host_ntp_flag_is_not_a_reading(tmp_path):
    """The host's timesyncd flag says nothing about a simulated node's clock: read_system never looks."""
    make_tree(tmp_path, synced=True)
    assert "clk_ok" not in system.read_system(tmp_path, data_path=tmp_path)


def test_missing_sources_give_none_never_raise(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    readings = system.read_system(empty, data_path=tmp_path / "no-such-dir", cert_path=tmp_path / "none.pem")
    assert readings == {"temp": None, "throttled": None, "thr": [], "load": None, "mem": None, "disk": None,
                        "up": None, "cert_d": None}


def test_garbage_in_sysfs_gives_none(tmp_path):
    make_tree(tmp_path, temp="hot\n", throttled="nope", meminfo="MemTotal: 0 kB\n", uptime="x", loadavg="")
    assert system.cpu_temp_c(tmp_path) is None
    assert system.throttled_bits(tmp_path) is None
    assert system.memory_available_pct(tmp_path) is None
    assert system.uptime_s(tmp_path) is None
    assert system.load_1m(tmp_path) is None


def test_disk_free_reads_statvfs_of_data_partition(tmp_path):
    st = os.statvfs(tmp_path)
    assert system.disk_free_mb(tmp_path) == st.f_bavail * st.f_frsize // (1024 * 1024)


def test_cert_days_left_counts_whole_days(tmp_path):
    from provisioning import pki

    ca_key, ca_cert = pki.create_ca("test CA")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    _, cert = pki.issue_client_cert(ca_key, ca_cert, "27787-03", not_before=now - dt.timedelta(days=1),
                                    not_after=now + dt.timedelta(days=29, hours=12))
    path = tmp_path / "node.crt"
    pki.write_cert(path, cert)
    assert system.cert_days_left(path, now) == 29
    assert system.cert_days_left(path, now + dt.timedelta(days=40)) < 0
    (tmp_path / "bad.crt").write_text("not a certificate")
    assert system.cert_days_left(tmp_path / "bad.crt", now) is None


def test_read_system_feeds_thr_names(tmp_path):
    make_tree(tmp_path, throttled="0x4\n")
    readings = system.read_system(tmp_path, data_path=tmp_path)
    assert readings["thr"] == ["throttled"] and readings["throttled"] == 4
    assert readings["temp"] == 48.3
