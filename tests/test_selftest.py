"""`speaker-node selftest` on simulated hardware (MockFactory pins, pty modem) and a real Mosquitto:
a healthy node passes every line, and each fault fails exactly its own line and nothing else."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import subprocess
import time
import wave
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from node.config import load_config
from node.modem.at import ATPort
from node.modem.simulator import ModemSimulator
from node.selftest import main, render_json, run_checks, simulated_modem, simulated_pin_factory
from node.trust import keys as ed25519
from provisioning import pki
from provisioning.district.signing import build_trust_body, sign_trust

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
NODE = "27787-01"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
EXPECTED_IDS = [
    "config",
    "certificate",
    "trust",
    "clock",
    "service",
    "broker",
    "libvlc",
    "modem",
    "relay:amplifier",
    "relay:north",
    "relay:south",
    "audio",
    "input:door",
    "input:mains",
    "input:amp_fault",
    "disk",
]


def write_trust(path: Path, expires: dt.datetime) -> Path:
    root = ed25519.generate()
    body = build_trust_body(
        version=3,
        issued_at=NOW - dt.timedelta(hours=1),
        expires=expires,
        root_keys=[root],
        root_threshold=1,
        keys={},
    )
    path.write_bytes(sign_trust(body, [root]))
    return path


def write_config(
    tmp: Path,
    ws: Path,
    servers: list[str],
    *,
    modem_port: str = "sim",
    cert: Path | None = None,
    key: Path | None = None,
    sync_file: Path | None = None,
) -> Path:
    node_dir = ws / "nodes" / NODE
    sync_file = sync_file or tmp / "timesync-synchronized"
    text = f"""
[node]
id = "{NODE}"
groups = ["c27787", "d760", "p75"]
simulate = true

[broker]
servers = {json.dumps(servers)}
ca_file = "{ws / "tls" / "ca.crt"}"
cert_file = "{cert or node_dir / "node.crt"}"
key_file = "{key or node_dir / "node.key"}"

[trust]
file = "{tmp / "trust.json"}"

[storage]
state_dir = "{tmp / "state"}"

[audio]
output = "wav"

[relays]
amplifier = {{ pin = 17, active_high = true }}
zones = [
  {{ name = "north", pin = 27, active_high = true }},
  {{ name = "south", pin = 22, active_high = false }},
]
warmup = 0.05
tail = 0.05

[inputs]
door = {{ pin = 5, active_high = false }}
mains = {{ pin = 6, active_high = true }}
amp_fault = {{ pin = 13, active_high = false }}
relay_feedback = {{ pin = 19, active_high = false }}
debounce = 0.01

[modem]
enabled = true
port = "{modem_port}"

[clock]
ntp_sync_file = "{sync_file}"
"""
    path = tmp / "node.toml"
    path.write_text(text)
    return path


@pytest.fixture
def node_config(tmp_path, district_ws, broker) -> Path:
    write_trust(tmp_path / "trust.json", NOW + dt.timedelta(days=200))
    (tmp_path / "timesync-synchronized").touch()
    (tmp_path / "state").mkdir()
    return write_config(tmp_path, district_ws, [broker.address])


def checks_json(results) -> dict:
    return json.loads(render_json(results))


def failed_ids(results) -> list[str]:
    return [c["id"] for c in checks_json(results)["checks"] if c["ok"] is False]


def run_simulated(cfg, **kw):
    factory = kw.pop("pin_factory", None) or simulated_pin_factory(cfg)
    kw.setdefault("service_props", lambda: RUNNING)
    try:
        if cfg.modem.port == "sim":
            with simulated_modem() as port:
                return run_checks(cfg, pin_factory=factory, modem_port=port, locale="en", **kw)
        return run_checks(cfg, pin_factory=factory, locale="en", **kw)
    finally:
        factory.reset()


RUNNING = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}


def test_healthy_simulated_node_passes_every_line(node_config, broker):
    results = run_simulated(load_config(node_config))
    report = checks_json(results)
    assert [c["id"] for c in report["checks"]] == EXPECTED_IDS
    assert report["ok"] is True, report
    by_id = {c["id"]: c for c in report["checks"]}
    assert all(by_id[i]["ok"] is True for i in EXPECTED_IDS if i != "audio"), report
    assert by_id["audio"]["ok"] is None  # silent by default
    assert broker.address in by_id["broker"]["detail"]
    assert "Viettel" in by_id["modem"]["detail"] and "home network" in by_id["modem"]["detail"]
    assert "feedback" in by_id["relay:amplifier"]["detail"]
    assert set(by_id["certificate"]) == {"id", "ok", "detail", "hint", "warn"}


def test_stuck_amplifier_relay_fails_only_its_line(node_config):
    cfg = load_config(node_config)
    results = run_simulated(cfg, pin_factory=simulated_pin_factory(cfg, feedback_follows=False))
    assert failed_ids(results) == ["relay:amplifier"]
    line = next(r for r in results if r.id == "relay:amplifier")
    assert "stayed OFF" in line.detail and "GPIO 19" in line.hint


def energised_intervals(pin, cleared_at: float, active_high: bool) -> list[tuple[float, float]]:
    """(start, end) monotonic times during which the relay on this mock pin was energised. The level the
    mock pin had before its OutputDevice opened is not a relay state, so the first entry is skipped."""
    intervals, t, start = [], cleared_at + pin.states[0].timestamp, None
    for change in pin.states[1:]:
        t += change.timestamp
        if change.state == active_high and start is None:
            start = t
        elif change.state != active_high and start is not None:
            intervals.append((start, t))
            start = None
    return intervals + ([(start, float("inf"))] if start is not None else [])


def test_silent_relay_test_never_energises_the_amplifier_with_a_zone(node_config):
    cfg = load_config(node_config)
    factory = simulated_pin_factory(cfg)
    pins = {17: True, 27: True, 22: False}  # pin -> active_high (south is an active-low relay board)
    mock, cleared = {pin: factory.pin(pin) for pin in pins}, {}
    for pin in pins:
        mock[pin].clear_states()
        cleared[pin] = time.monotonic()
    run_simulated(cfg, pin_factory=factory)
    on = {pin: energised_intervals(mock[pin], cleared[pin], high) for pin, high in pins.items()}
    assert [len(on[pin]) for pin in pins] == [1, 1, 1]  # each relay clicked exactly once
    ((amp_on, amp_off),) = on[17]
    for zone in (27, 22):
        ((zone_on, zone_off),) = on[zone]
        assert zone_on >= amp_off or zone_off <= amp_on
    assert mock[22].state is True and mock[17].state is False and mock[27].state is False  # all released


def test_absent_modem_fails_only_the_modem_line(node_config, tmp_path, district_ws, broker):
    write_config(tmp_path, district_ws, [broker.address], modem_port=str(tmp_path / "ttyNoSuchModem"))
    results = run_simulated(load_config(node_config))
    assert failed_ids(results) == ["modem"]
    line = next(r for r in results if r.id == "modem")
    assert "ttyNoSuchModem" in line.detail and "USB" in line.hint


def test_modem_without_sim_fails_with_the_sim_hint(node_config):
    cfg = load_config(node_config)
    factory = simulated_pin_factory(cfg)
    try:
        with ModemSimulator() as sim, ATPort(sim.port, timeout=3.0) as port:
            sim.set_sim("absent")
            results = run_checks(cfg, pin_factory=factory, modem_port=port, locale="en")
    finally:
        factory.reset()
    assert failed_ids(results) == ["modem"]
    line = next(r for r in results if r.id == "modem")
    assert line.detail == "No SIM card detected" and "SIM" in line.hint


def test_certificate_expiring_in_5_days_fails_only_the_certificate_line(
    node_config, tmp_path, district_ws, broker
):
    tls = district_ws / "tls"
    key, cert = pki.issue_client_cert(
        pki.load_private_key(tls / "ca.key"),
        pki.load_cert(tls / "ca.crt"),
        NODE,
        not_after=NOW + dt.timedelta(days=5),
    )
    pki.write_private_key(tmp_path / "short.key", key)
    pki.write_cert(tmp_path / "short.crt", cert)
    write_config(
        tmp_path, district_ws, [broker.address], cert=tmp_path / "short.crt", key=tmp_path / "short.key"
    )
    results = run_simulated(load_config(node_config))
    assert failed_ids(results) == ["certificate"]
    line = next(r for r in results if r.id == "certificate")
    assert "expires in 5 days" in line.detail and "issue-cert" in line.hint


def test_certificate_within_30_days_passes_with_a_warning(node_config, tmp_path, district_ws, broker):
    tls = district_ws / "tls"
    key, cert = pki.issue_client_cert(
        pki.load_private_key(tls / "ca.key"),
        pki.load_cert(tls / "ca.crt"),
        NODE,
        not_after=NOW + dt.timedelta(days=20),
    )
    pki.write_private_key(tmp_path / "soon.key", key)
    pki.write_cert(tmp_path / "soon.crt", cert)
    write_config(
        tmp_path, district_ws, [broker.address], cert=tmp_path / "soon.crt", key=tmp_path / "soon.key"
    )
    results = run_simulated(load_config(node_config))
    assert failed_ids(results) == []
    line = next(c for c in checks_json(results)["checks"] if c["id"] == "certificate")
    assert line["ok"] is True and line["warn"] is True and "20 days" in line["detail"]


def test_certificate_of_another_node_or_foreign_ca_fails(node_config, tmp_path, district_ws, broker):
    other = district_ws / "nodes" / "27787-02"
    write_config(tmp_path, district_ws, [broker.address], cert=other / "node.crt", key=other / "node.key")
    results = run_simulated(load_config(node_config))
    assert "certificate" in failed_ids(results)
    assert "27787-02" in next(r for r in results if r.id == "certificate").detail
    odd = district_ws / "odd"
    write_config(tmp_path, district_ws, [broker.address], cert=odd / "foreign.crt", key=odd / "foreign.key")
    results = run_simulated(load_config(node_config))
    assert {"certificate", "broker"} <= set(failed_ids(results))
    assert "district CA" in next(r for r in results if r.id == "certificate").detail


def test_expiring_trust_document_fails_only_the_trust_line(node_config, tmp_path):
    write_trust(tmp_path / "trust.json", NOW + dt.timedelta(days=3))
    results = run_simulated(load_config(node_config))
    assert failed_ids(results) == ["trust"]


def test_unsynchronised_clock_fails_only_the_clock_line(node_config, tmp_path):
    (tmp_path / "timesync-synchronized").unlink()
    results = run_simulated(load_config(node_config))
    assert failed_ids(results) == ["clock"]
    assert "time-bound commands" in next(r for r in results if r.id == "clock").hint


def test_open_door_and_missing_mains_fail_their_own_lines(node_config):
    cfg = load_config(node_config)
    results = run_simulated(cfg, pin_factory=simulated_pin_factory(cfg, active_inputs=("door",)))
    assert failed_ids(results) == ["input:door", "input:mains"]
    factory = simulated_pin_factory(cfg, active_inputs=("mains", "door"))
    results = run_checks(cfg, pin_factory=factory, locale="vi_VN.UTF-8")
    factory.reset()
    door = next(r for r in results if r.id == "input:door")
    assert door.ok is False and door.detail == "Cửa tủ đang mở"


def test_daemon_holding_the_lock_skips_relays_and_reads_its_status(node_config, tmp_path):
    cfg = load_config(node_config)
    run_dir = Path(cfg.storage.runtime_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / "daemon.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    factory = MockFactory()  # plain pins: any GPIO the self-test touched would appear in factory.pins
    try:
        results = run_checks(cfg, pin_factory=factory, locale="en")
        by_id = {c["id"]: c for c in checks_json(results)["checks"]}
        for rid in ("relay:amplifier", "relay:north", "relay:south"):
            assert by_id[rid]["ok"] is None
            assert by_id[rid]["hint"] == "stop the service first: sudo systemctl stop speaker-node"
        assert by_id["input:door"]["ok"] is None and by_id["modem"]["ok"] is None  # no status.json yet
        assert not factory.pins
        assert failed_ids(results) == []

        (run_dir / "status.json").write_text(
            json.dumps(
                {
                    "inputs": {"door": True, "mains": True, "amp_fault": False},
                    "net": {
                        "op": "Viettel",
                        "mccmnc": "45204",
                        "act": "lte",
                        "rssi": -67,
                        "rsrp": -95,
                        "sinr": 12,
                        "reg": "home",
                        "sim": "ready",
                    },
                }
            )
        )
        results = run_checks(cfg, pin_factory=factory, locale="en")
        assert failed_ids(results) == ["input:door"]
        # The daemon's own clock verdict outranks the NTP flag: signed district time, no NTP on this pole.
        (tmp_path / "timesync-synchronized").unlink()
        status = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps({**status, "clk": {"ok": True, "src": "signed"}}))
        clock = next(r for r in run_checks(cfg, pin_factory=factory, locale="en") if r.id == "clock")
        assert clock.ok is True and "source signed" in clock.detail
        (tmp_path / "timesync-synchronized").touch()     # NTP says synchronised, the daemon does not trust it
        (run_dir / "status.json").write_text(json.dumps({**status, "clk": {"ok": False, "src": None}}))
        clock = next(r for r in run_checks(cfg, pin_factory=factory, locale="en") if r.id == "clock")
        assert clock.ok is False and "does not trust its clock" in clock.detail
        by_id = {r.id: r for r in results}
        assert "running service" in by_id["input:door"].detail
        assert by_id["modem"].ok is True and "Viettel" in by_id["modem"].detail
        assert not factory.pins
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        factory.reset()
    assert "relay:amplifier" not in failed_ids(run_simulated(cfg))  # lock released: relays tested again


def test_audible_plays_a_1khz_tone_through_the_zones(node_config):
    cfg = load_config(node_config)
    results = run_simulated(cfg, audible=True)
    assert failed_ids(results) == []
    audio = next(r for r in results if r.id == "audio")
    assert audio.ok is True and "north, south" in audio.detail
    with wave.open(str(Path(cfg.audio.wav_dir) / "selftest-tone.wav")) as played:
        rate, channels = played.getframerate(), played.getnchannels()
        frames = played.readframes(played.getnframes())
    samples = memoryview(frames).cast("h")[::channels]
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    seconds = len(samples) / rate
    assert 0.9 < seconds < 1.2
    assert 1800 < crossings / seconds < 2200  # two zero crossings per cycle of 1 kHz


# --- the command line, as a technician runs it --------------------------------------------------------


def run_cli(args, lang: str):
    env = dict(os.environ, LANG=lang, LC_ALL="", LC_MESSAGES="", PYTHONPATH=str(ROOT))
    python = ROOT / ".venv" / "bin" / "python"
    return subprocess.run(
        [str(python), "-m", "node", "selftest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_cli_speaks_vietnamese_and_exits_0_when_all_pass(node_config):
    done = run_cli(["--config", str(node_config), "--simulate"], "vi_VN.UTF-8")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ĐẠT" in done.stdout and "Tất cả các mục đều đạt" in done.stdout and "PASS" not in done.stdout


def test_cli_fails_in_english_with_the_hint_and_exit_1(node_config, tmp_path):
    (tmp_path / "timesync-synchronized").unlink()
    done = run_cli(["--config", str(node_config), "--simulate"], "en_US.UTF-8")
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "clock" in done.stdout and "timedatectl" in done.stdout
    assert "1 check(s) failed: clock" in done.stdout
    vi = run_cli(["--config", str(node_config), "--simulate", "--json"], "vi_VN.UTF-8")
    assert vi.returncode == 1
    report = json.loads(vi.stdout)
    assert report["ok"] is False
    assert [c["id"] for c in report["checks"] if c["ok"] is False] == ["clock"]
    assert "Kiểm tra dữ liệu 4G" in next(c for c in report["checks"] if c["id"] == "clock")["hint"]


def test_missing_config_exits_78_without_a_traceback(tmp_path):
    done = run_cli(["--config", str(tmp_path / "nope.toml")], "en_US.UTF-8")
    assert done.returncode == 78
    assert "Traceback" not in done.stdout + done.stderr
    assert "no such file" in done.stdout and "check-config" in done.stdout


def test_invalid_config_lists_every_problem_in_json(tmp_path, capsys):
    bad = tmp_path / "node.toml"
    bad.write_text('[node]\nid = "x"\n[broker]\nservers = []\n')
    assert main(["--config", str(bad), "--json"]) == 78
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [c["id"] for c in report["checks"]] == ["config"]
    assert "node.id" in report["checks"][0]["detail"] and "broker.servers" in report["checks"][0]["detail"]


def test_unregistered_or_weak_modem_points_at_the_antenna():
    from node.messages import text
    from node.modem.status import ModemStatus
    from node.selftest_checks import judge_modem

    def vi(message_id, **values):
        return text(message_id, "vi", **values)

    searching = judge_modem(ModemStatus(sim="ready", registration="searching", rssi_dbm=-113), vi)
    assert searching.ok is False and searching.hint.startswith("Kiểm tra dây anten")
    weak = judge_modem(
        ModemStatus(sim="ready", registration="roaming", operator="Vinaphone", rsrp_dbm=-118), vi
    )
    assert weak.ok is True and weak.warn is True and "dây anten" in weak.hint
