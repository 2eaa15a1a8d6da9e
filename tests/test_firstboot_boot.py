"""Prove first boot by booting (issue 10): a Raspberry Pi OS-shaped arm64 image provisioned with the
project's CLIs exactly as docs/provisioning.md says, booted twice in qemu-system-aarch64 (the Bookworm
firstrun.sh boot, then the normal one), against a real Mosquitto on this machine (qemu user networking
maps 10.0.2.2 to the host's loopback). And armhf in a chroot: the offline bundle with the cffi wheel
built in an armhf root, the same first-boot script, the node software run by the service user.

Slow (`-m slow`): builds the roots from the Debian mirror (SPEAKER_CI_CACHE=DIR keeps them), downloads
wheels from PyPI and Debian packages. Every step is timed; the times are printed ([timing] lines) and
written to $SPEAKER_BOOT_TIMINGS (a JSON file) when set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pi_image
import pytest
from pi_image import Timings, run
from support import district_probe

from provisioning.district.localbroker import LocalBroker, free_port

pytestmark = [pytest.mark.slow]
NODE_ID = "27787-03"
SSH_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9ydGhldGVjaG5pY2lhbmxhcHRvcA tech@laptop"
BIN = Path(sys.executable).parent

# Test instrumentation, not product: on the second boot, report from inside the machine over the serial
# console, as a technician at the pole would see it, then power off.
CI_REPORT = """#!/bin/bash
exec > /dev/ttyAMA0 2>&1
for i in $(seq 1 150); do
    state="$(systemctl is-active speaker-node.service)"
    [ "$state" = active ] && [ -s /run/speaker-node/status.json ] && break
    sleep 2
done
echo "CI-REPORT service=$state"
echo "CI-REPORT path=$(runuser -l tech -c 'command -v speaker-node')"
echo "CI-REPORT key-mode=$(stat -c '%a %U:%G' /etc/speaker-node/node.key)"
tech_selftest="sudo GPIOZERO_PIN_FACTORY=mock speaker-node selftest --json"
echo "CI-REPORT selftest=$(runuser -l tech -c "$tech_selftest" | tail -n 1)"
systemctl status --no-pager -l speaker-node.service | sed 's/^/CI-STATUS /' | head -n 20
journalctl -b -u speaker-node.service --no-pager | tail -n 30 | sed 's/^/CI-JOURNAL /'
echo "CI-REPORT done"
sync
systemctl poweroff
"""
CI_UNIT = """[Unit]
Description=CI: report first-boot results on the serial console
ConditionPathExists=/boot/firmware/speaker-node/installed.json
After=speaker-node.service multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ci-report

[Install]
WantedBy=multi-user.target
"""
# The virt machine has no GPIO header: gpiozero's mock pins stand in for the Pi's (the only fake).
VIRT_DROPIN = "[Service]\nEnvironment=GPIOZERO_PIN_FACTORY=mock\n"


def parse_report(serial: str) -> dict[str, str]:
    """CI-REPORT key=value lines from the console (a getty prompt may share the line's start)."""
    report = {}
    for line in serial.splitlines():
        if "CI-REPORT " in line and "=" in line:
            key, _, value = line.split("CI-REPORT ", 1)[1].partition("=")
            report[key] = value
    return report


def cli(name: str, *args, **kw) -> subprocess.CompletedProcess:
    return run(BIN / name, *args, capture_output=True, text=True, **kw)


def timings_out(t: Timings, label: str) -> None:
    target = os.environ.get("SPEAKER_BOOT_TIMINGS")
    if target:
        path = Path(target)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[label] = t.steps
        path.write_text(json.dumps(data, indent=2) + "\n")


def district_and_node(work: Path, broker_host: str, port: int) -> tuple[Path, Path]:
    ws = work / "district"
    cli("speaker-district", "init", ws, "--broker-host", broker_host)
    cli("speaker-provision", "node", "new", ws, "--commune", "27787", "--district", "760", "--province", "75",
        "--cluster", "3", "--broker", f"{broker_host}:{port}", "-o", work / "nodes")
    return ws, work / "nodes" / NODE_ID


@pytest.fixture
def need_root_tools():
    def check(arch):
        if os.geteuid() != 0:
            pytest.skip("needs root (debootstrap, chroot)")
        missing = pi_image.missing_tools(arch)
        if missing:
            pytest.skip(f"missing: {', '.join(missing)} (bash .ci/setup installs them)")
    return check


@pytest.mark.timeout(2400)
def test_arm64_image_boots_to_a_connected_service_with_the_key_off_the_fat_partition(tmp_path, need_root_tools):
    need_root_tools("arm64")
    t = Timings()
    root = tmp_path / "root"
    with t.step("base root (mmdebstrap arm64, or cache)"):
        pi_image.base_root(root, "arm64", pi_image.BASE_PACKAGES)
    with t.step("virt kernel + initramfs"):
        vmlinuz, initrd = pi_image.add_virt_kernel(root, tmp_path)
    pi_image.shape_like_raspios(root)
    (root / "usr" / "local" / "sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr" / "local" / "sbin" / "ci-report").write_text(CI_REPORT)
    (root / "usr" / "local" / "sbin" / "ci-report").chmod(0o755)
    (root / "etc" / "systemd" / "system" / "ci-report.service").write_text(CI_UNIT)
    (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "ci-report.service").symlink_to(
        "/etc/systemd/system/ci-report.service")
    dropin = root / "etc" / "systemd" / "system" / "speaker-node.service.d"
    dropin.mkdir(parents=True)
    (dropin / "ci-virt.conf").write_text(VIRT_DROPIN)
    with t.step("disk image (FAT bootfs + ext4 root)"):
        image = pi_image.make_disk(tmp_path / "raspios-arm64.img", root, work=tmp_path)
    shutil.rmtree(root)

    port = free_port()
    with t.step("technician: bundle (PyPI + Debian)"):
        bundle = tmp_path / "bundle"
        res = cli("speaker-provision", "bundle", "-o", bundle, "--arch", "arm64", "--python", "3.11", check=False)
        assert res.returncode == 0, res.stderr
    with t.step("technician: district init + node new"):
        ws, node = district_and_node(tmp_path, "10.0.2.2", port)
    (tmp_path / "tech.pub").write_text(SSH_PUB + "\n")
    with t.step("technician: sdcard"):
        res = cli("speaker-provision", "sdcard", "--image", image, "--node", node, "--ssh-key", tmp_path / "tech.pub",
                  "--bundle", bundle, check=False)
        assert res.returncode == 0, res.stderr
    key = (node / "node.key").read_bytes()
    key_body = b"".join(key.splitlines()[1:-1])[:48]
    assert key_body in pi_image.boot_partition_bytes(image).replace(b"\n", b"").replace(b"\r", b"")

    nodes = {NODE_ID: ["c27787", "d760", "p75"]}
    with LocalBroker(ws, tmp_path / "broker", port=port, nodes=nodes) as broker:
        probe = district_probe(broker, ws, subscribe=(f"spk/node/{NODE_ID}/status",))
        try:
            with t.step("boot 1: firstrun.sh (first boot, then reboot)"):
                status, serial1 = pi_image.boot(image, vmlinuz, initrd, tmp_path / "serial1.log", timeout=1500)
            log = (pi_image.fat_read(image, "/speaker-node/firstboot.log") or b"").decode(errors="replace")
            assert status is not None, f"first boot did not finish in time; log:\n{log[-3000:]}\n{serial1[-3000:]}"
            assert "node 27787-03 provisioned" in log, log[-4000:]
            with t.step("boot 2: service up, connected, self-test"):
                status, serial2 = pi_image.boot(image, vmlinuz, initrd, tmp_path / "serial2.log", timeout=900,
                                                until="CI-REPORT done")
                _, online = probe.find(lambda topic, obj: obj and obj.get("online") is True, timeout=30)
        finally:
            probe.close()
    report = parse_report(serial2)
    assert report.get("service") == "active", serial2[-5000:]
    assert report.get("path") == "/usr/local/bin/speaker-node", serial2[-3000:]
    assert report.get("key-mode") == "600 speaker:speaker"
    selftest = json.loads(report["selftest"])
    checks = {c["id"]: c for c in selftest["checks"]}
    for check in ("config", "certificate", "trust", "service", "broker", "libvlc"):
        assert checks[check]["ok"] is True, (check, checks[check])
    assert online["online"] is True

    # afterwards, on the card as a laptop sees it: the secrets are gone, bytes included
    on_fat = pi_image.boot_partition_bytes(image).replace(b"\n", b"").replace(b"\r", b"")
    assert key_body not in on_fat, "the node key's bytes are still on the FAT partition"
    for name in ("node.key", "identity.json"):
        assert pi_image.fat_read(image, f"/speaker-node/{name}") is None, name
    assert pi_image.fat_read(image, "/speaker-node/installed.json") is not None
    assert pi_image.fat_read(image, "/FIRSTBOOT-FAILED.txt") is None
    assert "systemd.run" not in pi_image.fat_read(image, "/cmdline.txt").decode()
    timings_out(t, "arm64-qemu")


@pytest.mark.timeout(2400)
def test_armhf_bundle_builds_cffi_and_first_boot_runs_in_an_armhf_root(tmp_path, need_root_tools):
    need_root_tools("armhf")
    t = Timings()
    root = tmp_path / "root"
    with t.step("base root (mmdebstrap armhf with build tools, or cache)"):
        pi_image.base_root(root, "armhf", pi_image.BASE_PACKAGES + pi_image.BUILD_PACKAGES)
    pi_image.shape_like_raspios(root)
    # inside a chroot the host's network is the node's: the broker name resolves to this machine
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n127.0.0.1\tbroker.test\n")

    with t.step("technician: bundle armhf (cffi built in the armhf root)"):
        bundle = tmp_path / "bundle"
        res = cli("speaker-provision", "bundle", "-o", bundle, "--arch", "armhf", "--python", "3.11",
                  "--build-root", root, check=False)
        assert res.returncode == 0, res.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    built = [f["name"] for f in manifest["files"] if f["name"].startswith("cffi-")]
    assert built and built[0].endswith("linux_armv7l.whl"), built

    port = free_port()
    ws, node = district_and_node(tmp_path, "broker.test", port)
    (tmp_path / "tech.pub").write_text(SSH_PUB + "\n")
    boot = root / "boot" / "firmware"
    (boot / "cmdline.txt").write_text(pi_image.CMDLINE)
    (boot / "issue.txt").write_text(pi_image.ISSUE)
    (boot / "kernel7l.img").write_bytes(b"")  # what tells a 32-bit bootfs apart
    with t.step("technician: sdcard (mounted bootfs)"):
        res = cli("speaker-provision", "sdcard", "--bootfs", boot, "--node", node, "--ssh-key",
                  tmp_path / "tech.pub", "--bundle", bundle, check=False)
        assert res.returncode == 0, res.stderr

    nodes = {NODE_ID: ["c27787", "d760", "p75"]}
    with pi_image.chroot_mounts(root), LocalBroker(ws, tmp_path / "broker", port=port, nodes=nodes):
        with t.step("first boot script in the armhf root"):
            res = run("chroot", root, "/bin/bash", "/boot/firmware/speaker-node/speaker-firstboot.sh",
                      "--boot", "/boot/firmware", capture_output=True, text=True, check=False, timeout=1800)
        log = (boot / "speaker-node" / "firstboot.log").read_text() if (boot / "speaker-node" /
                                                                         "firstboot.log").exists() else ""
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + log
        assert not (boot / "speaker-node" / "node.key").exists()
        assert (boot / "speaker-node" / "installed.json").exists()
        as_speaker = ["chroot", root, "runuser", "-u", "speaker", "--"]
        with t.step("service user: libVLC + cryptography + self-test"):
            res = run(*as_speaker, "/opt/speaker-node/current/venv/bin/python", "-c",
                      "import vlc, cffi, cryptography.x509.verification as v; "
                      "assert vlc.Instance(['--no-video']) is not None; print(vlc.libvlc_get_version().decode())",
                      capture_output=True, text=True, check=False, timeout=600)
            assert res.returncode == 0, res.stderr
            where = run("chroot", root, "runuser", "-u", "tech", "--", "/bin/sh", "-c", "command -v speaker-node",
                        capture_output=True, text=True, check=False).stdout.strip()
            assert where == "/usr/local/bin/speaker-node"
            # as root (what `sudo` gives the technician; sudo itself cannot run where /tmp is nosuid)
            res = run("chroot", root, "/usr/bin/env", "GPIOZERO_PIN_FACTORY=mock", "PATH=/usr/local/bin:/usr/bin:/bin",
                      "speaker-node", "selftest", "--json", capture_output=True, text=True, check=False,
                      timeout=600)
        checks = {c["id"]: c for c in json.loads(res.stdout.strip().splitlines()[-1])["checks"]}
        for check in ("config", "certificate", "broker", "libvlc"):
            assert checks[check]["ok"] is True, (check, checks[check], res.stderr[-2000:])
    timings_out(t, "armhf-chroot")
