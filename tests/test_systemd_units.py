"""The shipped systemd units: they verify cleanly, the daemon's sandbox scores <= 2.0 while still
reaching GPIO, sound and the modem, and the drop-ins say what the field needs."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNITS = ("speaker-node.service", "speaker-firstboot.service", "speaker-reboot.service", "speaker-reboot.path",
         "speaker-update.service", "speaker-update.path", "speaker-district.service")
EXEC_PATHS = ("/opt/speaker-node/current/venv/bin/speaker-node", "/opt/speaker-node/committed/venv/bin/speaker-node",
              "/usr/local/lib/speaker-node/speaker-firstboot.sh", "/opt/speaker-district/venv/bin/speaker-district")

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def unit_settings(name: str) -> dict[str, list[str]]:
    """Every Key=value of a unit, keeping repeated keys (DeviceAllow=, SystemCallFilter=)."""
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def copy_with_stub_executables(tmp_path: Path, name: str) -> Path:
    """systemd-analyze verify checks that ExecStart= programs exist; point them at a stub instead."""
    stub = tmp_path / "stub-exec"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (SYSTEMD / name).read_text()
    for path in EXEC_PATHS:
        text = text.replace(path, str(stub))
    copy = tmp_path / name
    copy.write_text(text)
    if name.endswith(".path"):  # a path unit is verified together with the unit it starts
        service = copy_with_stub_executables(tmp_path, name.replace(".path", ".service"))
        assert service.exists()
    return copy


@pytest.mark.parametrize("name", UNITS)
def test_unit_passes_systemd_analyze_verify_without_warnings(tmp_path, name):
    copy = copy_with_stub_executables(tmp_path, name)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    own = [line for line in proc.stderr.splitlines() if name in line]
    assert own == [], "\n".join(own)  # unknown keys are only warnings: catch them too


def test_verify_catches_a_typo(tmp_path):
    """The check above can fail: a misspelt key is reported."""
    copy = copy_with_stub_executables(tmp_path, "speaker-node.service")
    copy.write_text(copy.read_text().replace("ProtectClock=", "ProtectClok="))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True
    )
    assert "ProtectClok" in proc.stderr


def security_score(path: Path) -> float:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def test_daemon_sandbox_exposure_is_at_most_2(tmp_path):
    assert security_score(copy_with_stub_executables(tmp_path, "speaker-node.service")) <= 2.0


def test_district_service_sandbox_exposure_is_at_most_2(tmp_path):
    assert security_score(copy_with_stub_executables(tmp_path, "speaker-district.service")) <= 2.0


def test_district_service_contract():
    s = unit_settings("speaker-district.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]     # READY=1 once every duty is up
    assert s["ExecStart"] == ["/opt/speaker-district/venv/bin/speaker-district serve /var/lib/speaker-district"]
    assert s["StateDirectory"] == ["speaker-district"] and s["User"] == ["speaker-district"]
    assert s["Restart"] == ["on-failure"] and s["UMask"] == ["0077"]
    # the nodes' time source answers only once its own clock is synchronised
    assert "time-sync.target" in " ".join(s["After"]) and "time-sync.target" in " ".join(s["Wants"])
    assert "DeviceAllow" not in s and s["PrivateDevices"] == ["yes"]


def test_score_check_can_fail(tmp_path):
    copy = copy_with_stub_executables(tmp_path, "speaker-node.service")
    loose = [
        line
        for line in copy.read_text().splitlines()
        if not line.startswith(
            (
                "Protect",
                "Restrict",
                "SystemCall",
                "Capability",
                "Private",
                "NoNew",
                "Device",
                "MemoryDeny",
                "LockPersonality",
                "UMask",
                "RemoveIPC",
            )
        )
    ]
    copy.write_text("\n".join(loose) + "\n")
    assert security_score(copy) > 2.0


def test_hardware_stays_reachable_inside_the_sandbox():
    s = unit_settings("speaker-node.service")
    assert s["DevicePolicy"] == ["closed"]
    allowed = set(s["DeviceAllow"])
    assert {
        "char-gpiochip rw",
        "/dev/gpiomem rw",
        "char-alsa rw",
        "char-ttyUSB rw",
        "char-ttyACM rw",
    } <= allowed
    assert "PrivateDevices" not in s  # would hide /dev/gpiochip*, /dev/snd and the modem
    assert "PrivateUsers" not in s  # would drop the supplementary groups below
    assert s["SupplementaryGroups"] == ["gpio audio dialout"]
    assert "ProcSubset" not in s  # the heartbeat reads /proc/meminfo, /proc/loadavg, /proc/uptime
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]


def test_daemon_service_contract():
    s = unit_settings("speaker-node.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"] and s["WatchdogSec"] == ["30"]
    assert s["ExecStart"] == [
        "/opt/speaker-node/current/venv/bin/speaker-node run --config /etc/speaker-node/node.toml"
    ]
    # The amplifier-off path and the update guard run the last version that passed its health check,
    # so a broken update cannot break them too; the guard runs as root ("+") to point `current` back.
    assert s["ExecStopPost"] == [
        "/opt/speaker-node/committed/venv/bin/speaker-node relays-off --config /etc/speaker-node/node.toml"
    ]
    assert s["ExecStartPre"] == [
        "+/opt/speaker-node/committed/venv/bin/speaker-node update-guard --root /opt/speaker-node "
        "--state /var/lib/speaker-node/update.json"
    ]
    assert s["Restart"] == ["always"] and s["RestartSec"] == ["5"]
    assert s["User"] == ["speaker"] and s["Group"] == ["speaker"]
    assert s["StateDirectory"] == ["speaker-node"] and s["ConfigurationDirectory"] == ["speaker-node"]
    assert s["ProtectSystem"] == ["strict"] and s["UMask"] == ["0077"]
    # plays offline and without NTP: wants time sync and the network but never waits for them
    assert "time-sync.target" in s["Wants"][0] and "network-online.target" in s["Wants"][0]
    after = " ".join(s.get("After", []))
    assert "time-sync.target" not in after and "network-online.target" not in after
    assert "Requires" not in s


def test_node_unit_never_gives_up_except_for_a_configuration_a_person_must_fix(tmp_path):
    """No start limit (a crash loop on a pole must not end in 'start request repeated too quickly'),
    restart after every exit, except EX_CONFIG (78), which the daemon returns only for node.toml."""
    s = unit_settings("speaker-node.service")
    assert s["StartLimitIntervalSec"] == ["0"] and "StartLimitBurst" not in s
    assert s["Restart"] == ["always"] and s["RestartPreventExitStatus"] == ["78"]
    copy = copy_with_stub_executables(tmp_path, "speaker-node.service")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "speaker-node.service" not in proc.stderr, proc.stderr


def test_firstboot_unit_runs_only_while_the_card_has_an_identity():
    s = unit_settings("speaker-firstboot.service")
    assert s["Type"] == ["oneshot"]
    assert s["ConditionPathExists"] == ["/boot/firmware/speaker-node/identity.json"]
    assert "speaker-node.service" in s["Before"][0]


def test_journald_and_watchdog_drop_ins():
    journald = configparser.ConfigParser()
    journald.optionxform = str
    journald.read(SYSTEMD / "journald-speaker.conf")
    assert journald["Journal"]["Storage"] == "volatile"
    assert journald["Journal"]["RuntimeMaxUse"] == "16M"
    watchdog = configparser.ConfigParser()
    watchdog.optionxform = str
    watchdog.read(SYSTEMD / "watchdog.conf")
    assert watchdog["Manager"]["RuntimeWatchdogSec"] == "15"
    assert watchdog["Manager"]["RebootWatchdogSec"] == "2min"


def test_update_installer_runs_the_committed_code_as_root_only_on_the_daemons_request():
    path = unit_settings("speaker-update.path")
    service = unit_settings("speaker-update.service")
    assert path["PathModified"] == ["/run/speaker-node/update.request"]
    assert path["Unit"] == ["speaker-update.service"]
    assert service["ConditionPathExists"] == ["/run/speaker-node/update.request"]
    assert service["ExecStart"] == [
        "/opt/speaker-node/committed/venv/bin/speaker-node update-apply --config /etc/speaker-node/node.toml"
    ]
    assert "User" not in service              # root: it writes /opt/speaker-node
    assert service["RestrictAddressFamilies"] == ["AF_UNIX"]   # offline install: no network at all
    assert service["ReadWritePaths"] == ["/opt/speaker-node /var/lib/speaker-node"]
