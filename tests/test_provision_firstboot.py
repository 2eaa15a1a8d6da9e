"""speaker-firstboot.sh against a scratch root directory, with stub system commands that log their
calls (useradd, chown, systemctl, python3/pip, ...): the real script, no real system change."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from test_provision_support import BOOKWORM_ISSUE, CMDLINE, make_district, make_fake_bundle

from provisioning import sdcard
from provisioning.node_new import NODE_FILES, create_node
from provisioning.nodeid import make_identity

SSH_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9ydGhldGVjaG5pY2lhbmxhcHRvcA tech@laptop"
LOGGING_STUB = '#!/bin/bash\necho "$(basename "$0") $*" >> "$STUB_LOG"\n'
STUBS = {
    name: LOGGING_STUB for name in ("chown", "systemctl", "hostnamectl", "hostname", "groupadd", "usermod")
}
# useradd records the user in the scratch root so a second run sees it, like the real one would.
STUBS["useradd"] = LOGGING_STUB + (
    'root=/; while [ $# -gt 1 ]; do [ "$1" = --root ] && root="$2"; shift; done\n'
    'echo "$1:x:999:999::/var/lib/speaker-node:/usr/sbin/nologin" >> "$root/etc/passwd"\n'
    'echo "$1:x:999:" >> "$root/etc/group"\n'
)
# The Debian packages on the card: none installed yet; names and versions come from the file name.
STUBS["dpkg-deb"] = LOGGING_STUB + (
    'b="$(basename "${@: -1}" .deb)"; IFS=_ read -r p v a <<< "$b"\n'
    'if [ "$1" = -f ]; then printf "Package: %s\\nVersion: %s\\nArchitecture: %s\\n" "$p" "$v" "$a"; '
    'else echo "$p $v $a"; fi\n')
STUBS["dpkg-query"] = LOGGING_STUB + "exit 1\n"
# chroot records what apt would read as its only source, then logs the call
STUBS["chroot"] = LOGGING_STUB + (
    'root="$1"; [ -f "$root/var/cache/speaker-node/apt/sources.list" ] && '
    'echo "cat-sources $(cat "$root/var/cache/speaker-node/apt/sources.list")" >> "$STUB_LOG"; true\n')
# python3 -m venv ... DIR makes DIR/bin/python, itself a stub whose "pip install" creates the entry point.
STUBS["python3"] = LOGGING_STUB + (
    'dir="${@: -1}"; mkdir -p "$dir/bin"\n'
    'cat > "$dir/bin/python" <<"EOS"\n#!/bin/bash\necho "venv-python $*" >> "$STUB_LOG"\n'
    '[ -n "$FAIL_PIP" ] && exit 1\n'
    'touch "$(dirname "$0")/speaker-node"; chmod +x "$(dirname "$0")/speaker-node"\nEOS\n'
    'chmod +x "$dir/bin/python"\n'
)


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory):
    district = make_district(tmp_path_factory.mktemp("district"))
    path, _ = create_node(district, make_identity("27787", "760", "75", 3), tmp_path_factory.mktemp("nodes"))
    return path


@pytest.fixture
def scratch(tmp_path, node_dir):
    root = tmp_path / "root"
    boot = root / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "cmdline.txt").write_text(CMDLINE)
    (boot / "issue.txt").write_text(BOOKWORM_ISSUE)
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\naudio:x:29:\ndialout:x:20:\n")  # no gpio group yet
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    bundle = make_fake_bundle(tmp_path / "bundle")
    key = tmp_path / "tech.pub"
    key.write_text(SSH_PUB + "\n")
    node = sdcard.NodeBundle.load(node_dir)
    sdcard.provision_card(
        sdcard.BootDirectory(boot), node, os_name="bookworm", ssh_key=SSH_PUB, bundle=bundle
    )
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    return root, boot, stubs, tmp_path / "stub.log"


def run_firstboot(root: Path, boot: Path, stubs: Path, log: Path, umask: str = "077",
                  **env) -> subprocess.CompletedProcess:
    """The script as the OS hook runs it; by default under the strict umask root may have on a Pi."""
    script = boot / "speaker-node" / "speaker-firstboot.sh"
    environ = {"PATH": f"{stubs}:/usr/bin:/bin:/usr/sbin:/sbin", "STUB_LOG": str(log), "LC_ALL": "C", **env}
    return subprocess.run(
        ["bash", "-c", f'umask {umask}; exec bash "$0" --root "$1"', str(script), str(root)],
        capture_output=True, text=True, env=environ, timeout=60,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_boot_moves_secrets_installs_units_and_removes_its_hook(scratch, node_dir):
    root, boot, stubs, log = scratch
    assert (boot / "firstrun.sh").exists() and "systemd.run=" in (boot / "cmdline.txt").read_text()
    proc = run_firstboot(root, boot, stubs, log)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    calls = log.read_text().splitlines()

    etc = root / "etc" / "speaker-node"
    assert mode(etc) == 0o750
    for name in NODE_FILES:
        assert (etc / name).read_bytes() == (node_dir / name).read_bytes(), name
        assert mode(etc / name) == 0o600, name
        assert not (boot / "speaker-node" / name).exists(), f"{name} left on the FAT partition"
        assert f"chown 999:999 {etc / name}" in calls, f"{name} not chowned to speaker"
    assert any(c.startswith("chown 0:999 ") and c.endswith("/etc/speaker-node") for c in calls)

    assert (root / "etc" / "hostname").read_text() == "27787-03\n"
    assert "127.0.1.1\t27787-03" in (root / "etc" / "hosts").read_text()
    assert os.readlink(root / "etc" / "localtime") == "/usr/share/zoneinfo/Asia/Ho_Chi_Minh"
    assert not any(c.startswith(("hostnamectl", "hostname ")) for c in calls), "touched the live system"

    assert f"groupadd --root {root} --system gpio" in calls
    assert any(
        c.startswith(f"useradd --root {root} --system") and "--groups gpio,audio,dialout speaker" in c
        for c in calls
    )
    assert any(
        c.startswith(f"useradd --root {root} --create-home") and c.endswith(" tech") and "--password *" in c
        for c in calls
    )
    assert (root / "home" / "tech" / ".ssh" / "authorized_keys").read_text().strip() == SSH_PUB
    assert mode(root / "home" / "tech" / ".ssh" / "authorized_keys") == 0o600
    sshd = (root / "etc" / "ssh" / "sshd_config.d" / "10-speaker-node.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd

    # The release tree of docs/protocol.md 8a: the bundle's version beside future ones, both links on it.
    tree = root / "opt" / "speaker-node"
    venv = tree / "releases" / "0.1.0" / "venv"
    assert f"python3 -m venv --system-site-packages --without-pip {venv}" in calls
    assert (tree / "releases" / "0.1.0" / ".complete").read_text().strip() == "0.1.0"
    assert os.readlink(tree / "current") == "releases/0.1.0"
    assert os.readlink(tree / "committed") == "releases/0.1.0"
    # what User=speaker must reach (status=203/EXEC when the venv was made under umask 077)
    for path in (tree, tree / "releases", venv, venv / "bin"):
        assert mode(path) == 0o755, path
    assert mode(venv / "bin" / "speaker-node") & 0o005 == 0o005
    link = root / "usr" / "local" / "bin" / "speaker-node"
    assert os.readlink(link) == "/opt/speaker-node/current/venv/bin/speaker-node"   # follows updates
    # the bundle seeds the update staging area, so a first update downloads only what changed
    staged = root / "var" / "lib" / "speaker-node" / "update-staging" / "0.1.0"
    assert (staged / "speaker_node-0.1.0-py3-none-any.whl").exists()
    # libVLC: the card's Debian packages installed offline inside the image, none downloaded
    apt = [c for c in calls if c.startswith(f"chroot {root} apt-get -o Dir::Etc::SourceList=")]
    assert len(apt) == 2 and apt[0].endswith(" -q update") and " install -y " in apt[1]
    assert apt[1].endswith(" libvlc5 vlc-plugin-base")
    assert "Dir::State::Lists=/var/cache/speaker-node/apt/lists" in apt[1]  # only the card's repository
    sources = [c for c in calls if c.startswith("cat-sources ")]
    assert set(sources) == {"cat-sources deb [trusted=yes] file:/boot/firmware/speaker-node/bundle/debs ./"}
    pip_call = next(c for c in calls if c.startswith("venv-python"))
    assert "install --no-index --find-links" in pip_call and pip_call.endswith("speaker-node")
    assert f"{boot}/speaker-node/bundle" in pip_call

    system = root / "etc" / "systemd"
    for path in (
        system / "system" / "speaker-node.service",
        system / "system" / "speaker-firstboot.service",
        system / "journald.conf.d" / "speaker-node.conf",
        system / "system.conf.d" / "speaker-watchdog.conf",
        system / "system" / "speaker-reboot.path",
        system / "system" / "speaker-reboot.service",
    ):
        assert path.exists() and mode(path) == 0o644, path
    assert "RuntimeWatchdogSec=15" in (system / "system.conf.d" / "speaker-watchdog.conf").read_text()
    assert mode(root / "usr" / "local" / "lib" / "speaker-node" / "speaker-firstboot.sh") == 0o755
    if (sdcard.REPO_SYSTEMD / "99-speaker-modem.rules").exists():
        assert (root / "etc" / "udev" / "rules.d" / "99-speaker-modem.rules").exists()
    assert f"systemctl --root {root} enable speaker-node.service" in calls
    assert f"systemctl --root {root} enable speaker-firstboot.service" in calls
    assert f"systemctl --root {root} enable speaker-reboot.path" in calls
    assert f"systemctl --root {root} enable ssh.service" in calls

    assert not (boot / "firstrun.sh").exists()
    assert (boot / "cmdline.txt").read_text() == CMDLINE
    assert not (boot / "speaker-node" / "identity.json").exists()
    assert (boot / "speaker-node" / "installed.json").exists()


def test_second_boot_does_nothing(scratch):
    root, boot, stubs, log = scratch
    assert run_firstboot(root, boot, stubs, log).returncode == 0
    log.write_text("")
    proc = run_firstboot(root, boot, stubs, log)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    assert log.read_text() == ""


def test_failing_install_still_moves_the_key_off_the_fat_partition_and_says_so(scratch, node_dir):
    root, boot, stubs, log = scratch
    led = root / "sys" / "class" / "leds" / "ACT"
    led.mkdir(parents=True)
    (led / "trigger").write_text("mmc0\n")
    failed = run_firstboot(root, boot, stubs, log, FAIL_PIP="1")
    assert failed.returncode != 0
    # the secrets rule: the key left the card even though the install failed
    assert (root / "etc" / "speaker-node" / "node.key").read_bytes() == (node_dir / "node.key").read_bytes()
    assert mode(root / "etc" / "speaker-node" / "node.key") == 0o600
    assert not (boot / "speaker-node" / "node.key").exists()
    # ... and the failure shows: a note on the FAT partition, the log names the step, the LED blinks fast
    note = (boot / "FIRSTBOOT-FAILED.txt").read_text()
    assert "wheels from the card" in note and "27787-03" in note and "firstboot.log" in note
    assert "FAILED at step 'wheels from the card'" in failed.stderr
    assert (led / "trigger").read_text().strip() == "timer" and (led / "delay_on").read_text().strip() == "100"
    # the retry path is in place and the marker is still there
    assert (boot / "speaker-node" / "identity.json").exists()
    assert (root / "etc" / "systemd" / "system" / "speaker-firstboot.service").exists()
    assert f"systemctl --root {root} enable speaker-firstboot.service" in log.read_text()

    log.write_text("")
    retried = run_firstboot(root, boot, stubs, log)
    assert retried.returncode == 0, retried.stderr
    calls = log.read_text().splitlines()
    assert not any(c.startswith("useradd") and c.endswith(" speaker") for c in calls), "user created twice"
    assert any(c.startswith("usermod") and c.endswith(" speaker") for c in calls)
    assert (root / "etc" / "speaker-node" / "node.key").read_bytes() == (node_dir / "node.key").read_bytes()
    assert not (boot / "FIRSTBOOT-FAILED.txt").exists()
    assert (boot / "speaker-node" / "installed.json").exists()


def test_power_cut_right_after_the_key_moved_is_finished_by_the_next_run(scratch, node_dir):
    root, boot, stubs, log = scratch
    # first run dies at the very first step after the secrets (a bad setting stands in for the power cut)
    env = boot / "speaker-node" / "firstboot.env"
    good = env.read_text()
    env.write_text(good.replace("NODE_ID=27787-03", "NODE_ID=27787-03;reboot"))
    assert run_firstboot(root, boot, stubs, log).returncode != 0
    assert not (boot / "speaker-node" / "node.key").exists()
    env.write_text(good)
    assert run_firstboot(root, boot, stubs, log).returncode == 0
    assert (root / "etc" / "speaker-node" / "node.key").read_bytes() == (node_dir / "node.key").read_bytes()


def test_tampered_node_id_on_the_card_is_refused(scratch):
    root, boot, stubs, log = scratch
    env = boot / "speaker-node" / "firstboot.env"
    env.write_text(env.read_text().replace("NODE_ID=27787-03", "NODE_ID=27787-03;reboot"))
    proc = run_firstboot(root, boot, stubs, log)
    assert proc.returncode != 0 and "bad NODE_ID" in proc.stderr
    assert not (root / "etc" / "hostname").exists()
    assert not (boot / "speaker-node" / "node.key").exists(), "the key must leave the card first"


def test_firstrun_hook_is_a_valid_bash_script_that_cleans_up_cmdline():
    text = (sdcard.FIRSTBOOT_DIR / "firstrun.sh").read_text()
    assert subprocess.run(["bash", "-n", str(sdcard.FIRSTBOOT_DIR / "firstrun.sh")]).returncode == 0
    assert "speaker-firstboot.sh" in text and 'rm -f "$BOOT/firstrun.sh"' in text
