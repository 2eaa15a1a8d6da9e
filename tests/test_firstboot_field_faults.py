"""Faults a technician meets at the pole after first boot (issue 10): an address that can only mean
the node itself, a name nobody resolves, no libVLC, a failed service, GPIO busy, a root Mosquitto."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from node.brokeraddr import is_loopback, resolve_problem
from node.config import broker_problems, load_config
from node.errors import EX_UNAVAILABLE, HardwareUnavailable
from node.messages import text
from node.selftest_checks import check_broker, check_libvlc, judge_libvlc, judge_service

EXAMPLE = Path(__file__).resolve().parent.parent / "node" / "data" / "node.example.toml"


def say(message_id, **values):
    return text(message_id, "en", **values)


def config_with(tmp_path, servers: str, simulate: bool = False):
    body = EXAMPLE.read_text().replace(
        'servers = ["mqtt1.district.example.vn:8883", "mqtt2.district.example.vn:8883"]', f"servers = {servers}")
    body = body.replace("simulate = false", f"simulate = {'true' if simulate else 'false'}")
    assert f"servers = {servers}" in body
    path = tmp_path / "node.toml"
    path.write_text(body)
    return path


def test_loopback_rules():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST.", "0.0.0.0", "::", "a.localhost"):
        assert is_loopback(host), host
    for host in ("10.0.2.2", "broker.example.vn", "192.168.1.10", "2001:db8::1"):
        assert not is_loopback(host), host


def test_check_config_refuses_a_loopback_broker_by_name(tmp_path):
    path = config_with(tmp_path, '["127.0.0.1:8883"]')
    res = subprocess.run([sys.executable, "-m", "node", "check-config", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 78 and "127.0.0.1:8883 is a loopback address" in res.stderr
    assert "OK" not in res.stdout


def test_simulated_node_may_use_a_loopback_broker(tmp_path):
    cfg = load_config(config_with(tmp_path, '["127.0.0.1:8883"]', simulate=True))
    assert broker_problems(cfg, resolve=lambda s: None) == ([], [])


def test_unresolvable_broker_name_is_named(tmp_path):
    def nxdomain(host, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert "does not resolve" in resolve_problem("mqtt.nowhere.invalid:8883", getaddrinfo=nxdomain)
    assert resolve_problem("10.0.2.2:8883") is None  # an IP literal never needs DNS
    cfg = load_config(config_with(tmp_path, '["mqtt.nowhere.invalid:8883"]'))
    loopback, unresolved = broker_problems(cfg, resolve=lambda s: resolve_problem(s, getaddrinfo=nxdomain))
    assert loopback == [] and "mqtt.nowhere.invalid" in unresolved[0]


def test_selftest_blames_the_address_not_the_4g_link_for_a_loopback_broker(tmp_path):
    cfg = load_config(config_with(tmp_path, '["127.0.0.1:8883"]'))
    result = check_broker(cfg, say, timeout=1)
    assert result.ok is False and "127.0.0.1:8883 is a loopback address" in result.detail
    assert "4G link is not the problem" in result.hint and "Check 4G data" not in result.hint


def test_selftest_loads_libvlc_and_lists_the_alsa_output(tmp_path):
    cfg = load_config(config_with(tmp_path, '["10.0.2.2:8883"]'))
    result = check_libvlc(cfg, say)
    assert result.ok is True, result.detail
    assert "alsa" in result.detail


def test_selftest_fails_when_libvlc_is_missing(tmp_path, monkeypatch):
    # what Raspberry Pi OS Lite looks like to python-vlc: no libvlc.so.5 to load
    monkeypatch.setenv("PYTHON_VLC_LIB_PATH", str(tmp_path / "libvlc.so.5"))
    cfg = load_config(config_with(tmp_path, '["10.0.2.2:8883"]'))
    result = check_libvlc(cfg, say)
    assert result.ok is False and "libVLC does not load" in result.detail and "libvlc5" in result.hint


def test_libvlc_without_the_configured_output_fails():
    result = judge_libvlc({"version": "3.0.21", "outputs": ["adummy", "afile"]}, "alsa", say)
    assert result.ok is False and "no 'alsa' audio output" in result.detail


def test_selftest_reports_a_service_that_cannot_start():
    failed = judge_service({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
                            "Result": "exit-code", "ExecMainStatus": "203"}, say)
    assert failed.ok is False and "ExecMainStatus=203" in failed.detail and "journalctl" in failed.hint
    assert judge_service({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}, say).ok is True
    assert judge_service({"LoadState": "not-found"}, say).ok is None
    assert judge_service(None, say).ok is None


def test_busy_gpio_pin_is_hardware_unavailable_not_a_config_error():
    from node.playback.relays import RelayBoard, RelaySpec

    factory = MockFactory()
    try:
        holder = OutputDevice(17, pin_factory=factory)  # another process's claim on the amplifier pin
        with pytest.raises(HardwareUnavailable, match="cannot open relay pins"):
            RelayBoard(RelaySpec(17), {"main": RelaySpec(27)}, pin_factory=factory)
        holder.close()
    finally:
        factory.reset()


def test_daemon_exits_69_for_unavailable_gpio_which_the_unit_restarts(tmp_path, monkeypatch, capsys):
    from node import app, daemon

    def busy(cfg):
        raise HardwareUnavailable("cannot open relay pins: pin 17 in use")

    monkeypatch.setattr(app, "NodeApp", busy)  # the daemon builds the node with node.app.NodeApp
    monkeypatch.setattr(daemon, "GPIO_RETRY_DELAY", 0.0)
    assert daemon.main(["--config", str(config_with(tmp_path, '["10.0.2.2:8883"]'))]) == EX_UNAVAILABLE == 69
    assert "GPIO unavailable" in capsys.readouterr().err
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "speaker-node.service").read_text()
    prevent = [line for line in unit.splitlines() if line.startswith("RestartPreventExitStatus=")]
    assert all("69" not in line.split("=", 1)[1].split() for line in prevent)
    def setting(name):
        return next(ln for ln in unit.splitlines() if ln.startswith(f"{name}=")).split("=")[1]

    assert setting("Restart") in ("on-failure", "always")
    # the unit never reaches a start limit: none at all (StartLimitIntervalSec=0, issue 12), or the retry
    # delay keeps it below StartLimitBurst in StartLimitIntervalSec
    if setting("StartLimitIntervalSec") != "0":
        interval = int(setting("StartLimitIntervalSec").removesuffix("min")) * 60
        cycle = daemon.DEFAULT_GPIO_RETRY_DELAY + int(setting("RestartSec"))
        assert interval / cycle < int(setting("StartLimitBurst"))


def test_broker_config_for_a_root_mosquitto(tmp_path, capsys):
    from provisioning.district.broker_config import main
    from provisioning.district.workspace import init_workspace

    init_workspace(tmp_path / "d", broker_hosts=["mqtt.example.vn"])
    assert main([str(tmp_path / "d"), "-o", str(tmp_path / "plain")]) == 0
    assert "--run-as-root" in capsys.readouterr().err
    assert "user root" not in (tmp_path / "plain" / "mosquitto.conf").read_text()
    assert main([str(tmp_path / "d"), "-o", str(tmp_path / "root"), "--run-as-root"]) == 0
    assert "user root" in (tmp_path / "root" / "mosquitto.conf").read_text().splitlines()
