"""`speaker-provision sdcard` on a real two-partition disk image (written with mtools, no root) and on a
mounted-boot-partition directory; everything read back independently with mtools."""

from __future__ import annotations

import io
import json
import subprocess
import tomllib

import pytest
from test_provision_support import (
    BOOKWORM_ISSUE,
    CMDLINE,
    fat_attributes,
    fat_list,
    fat_read,
    make_district,
    make_pi_image,
)

from provisioning import sdcard
from provisioning.bundle import write_manifest
from provisioning.node_new import create_node
from provisioning.nodeid import make_identity

SSH_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9ydGhldGVjaG5pY2lhbmxhcHRvcA tech@laptop"


@pytest.fixture(scope="module")
def district(tmp_path_factory):
    return make_district(tmp_path_factory.mktemp("district"))


@pytest.fixture(scope="module")
def nodes(district, tmp_path_factory):
    out = tmp_path_factory.mktemp("nodes")
    made = {}
    for cluster in (3, 4):
        path, _ = create_node(district, make_identity("27787", "760", "75", cluster), out)
        made[path.name] = path
    return made


@pytest.fixture
def image(tmp_path):
    return make_pi_image(tmp_path / "pi.img", tmp=tmp_path)


@pytest.fixture
def ssh_key(tmp_path):
    path = tmp_path / "tech.pub"
    path.write_text(SSH_PUB + "\n")
    return path


def provision(*args) -> int:
    return sdcard.main([str(a) for a in args])


def test_bookworm_image_gets_identity_units_and_imager_style_hook(image, nodes, ssh_key, capsys):
    node = nodes["27787-03"]
    assert provision("--image", image, "--node", node, "--ssh-key", ssh_key) == 0
    assert "bookworm" in capsys.readouterr().out
    for name in ("node.key", "node.crt", "ca.crt", "trust.json", "node.toml"):
        assert fat_read(image, f"/speaker-node/{name}") == (node / name).read_bytes(), name
    marker = json.loads(fat_read(image, "/speaker-node/identity.json"))
    ident = json.loads((node / "identity.json").read_text())
    assert marker == {"node_id": "27787-03", "fingerprint": ident["fingerprint"]}
    assert fat_read(image, "/speaker-node/authorized_keys").decode().strip() == SSH_PUB
    env = fat_read(image, "/speaker-node/firstboot.env").decode()
    assert "NODE_ID=27787-03\n" in env and "TIMEZONE=Asia/Ho_Chi_Minh\n" in env
    optional = {n for n in sdcard.OPTIONAL_UNIT_FILES if (sdcard.REPO_SYSTEMD / n).exists()}
    assert (
        fat_list(image, "/speaker-node/units")
        == {"speaker-node.service", "speaker-firstboot.service", "journald-speaker.conf", "watchdog.conf",
            "speaker-reboot.path", "speaker-reboot.service"}
        | optional
    )
    assert (
        fat_read(image, "/speaker-node/speaker-firstboot.sh")
        == (sdcard.FIRSTBOOT_DIR / "speaker-firstboot.sh").read_bytes()
    )
    assert fat_read(image, "/firstrun.sh") == (sdcard.FIRSTBOOT_DIR / "firstrun.sh").read_bytes()
    cmdline = fat_read(image, "/cmdline.txt").decode()
    assert cmdline.count("\n") == 1, "cmdline.txt must stay a single line"
    assert cmdline == CMDLINE.rstrip("\n") + (
        " systemd.run=/boot/firmware/firstrun.sh "
        "systemd.run_success_action=reboot "
        "systemd.unit=kernel-command-line.target\n"
    )
    assert "user-data" not in fat_list(image)
    # FAT has no owners or modes; all it can say is read-only/hidden/system, and none is set.
    assert "R" not in fat_attributes(image, "/speaker-node/node.key")
    assert fat_read(image, "/config.txt") == b"arm_64bit=1\ndtparam=audio=on\n"  # untouched
    assert (node.parent / "27787-03-label.svg").exists()


def test_same_node_again_is_idempotent(image, nodes):
    node = nodes["27787-03"]
    assert provision("--image", image, "--node", node) == 0
    first = {name: fat_read(image, f"/{name}") for name in ("cmdline.txt", "speaker-node/identity.json")}
    assert provision("--image", image, "--node", node) == 0
    assert {name: fat_read(image, f"/{name}") for name in first} == first
    assert fat_read(image, "/cmdline.txt").decode().count("systemd.run=") == 1


def test_card_holding_another_node_is_refused_without_force(image, nodes, capsys):
    assert provision("--image", image, "--node", nodes["27787-03"]) == 0
    capsys.readouterr()
    assert provision("--image", image, "--node", nodes["27787-04"]) == 2
    assert "27787-03" in capsys.readouterr().err
    assert json.loads(fat_read(image, "/speaker-node/identity.json"))["node_id"] == "27787-03"
    assert fat_read(image, "/speaker-node/node.key") == (nodes["27787-03"] / "node.key").read_bytes()
    assert provision("--image", image, "--node", nodes["27787-04"], "--force") == 0
    assert json.loads(fat_read(image, "/speaker-node/identity.json"))["node_id"] == "27787-04"
    assert fat_read(image, "/speaker-node/node.key") == (nodes["27787-04"] / "node.key").read_bytes()


def test_card_that_already_booted_as_another_node_is_refused(image, nodes, tmp_path):
    other = tmp_path / "installed.json"
    other.write_text(json.dumps({"node_id": "27787-04", "fingerprint": "AA"}))
    subprocess.run(
        ["mmd", "-i", f"{image}@@1048576", "::/speaker-node"],
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    subprocess.run(
        ["mcopy", "-i", f"{image}@@1048576", str(other), "::/speaker-node/installed.json"],
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    assert provision("--image", image, "--node", nodes["27787-03"]) == 2


def test_vietnamese_technician_sees_the_refusal_in_vietnamese(image, nodes, capsys, monkeypatch):
    monkeypatch.setenv("LANG", "vi_VN.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    assert provision("--image", image, "--node", nodes["27787-03"]) == 0
    assert "Thẻ nhớ đã sẵn sàng" in capsys.readouterr().out
    assert provision("--image", image, "--node", nodes["27787-04"]) == 2
    assert "Thẻ nhớ này đã chứa nút 27787-03" in capsys.readouterr().err


def test_trixie_card_gets_cloud_init_seed_and_no_cmdline_change(tmp_path, nodes, ssh_key):
    image = make_pi_image(
        tmp_path / "trixie.img", issue="Raspberry Pi reference 2025-10-01\n", cloud_init=True, tmp=tmp_path
    )
    assert provision("--image", image, "--node", nodes["27787-03"], "--ssh-key", ssh_key) == 0
    assert fat_read(image, "/cmdline.txt").decode() == CMDLINE
    assert fat_read(image, "/firstrun.sh") is None
    user_data = fat_read(image, "/user-data").decode()
    assert user_data.startswith("#cloud-config\n")
    for needle in (
        "hostname: 27787-03",
        "timezone: Asia/Ho_Chi_Minh",
        "ssh_pwauth: false",
        "speaker-node/speaker-firstboot.sh",
        SSH_PUB,
        "name: tech",
    ):
        assert needle in user_data
    assert "instance-id: speaker-27787-03-" in fat_read(image, "/meta-data").decode()
    assert "version: 2" in fat_read(image, "/network-config").decode()
    assert fat_read(image, "/speaker-node/node.toml") == (nodes["27787-03"] / "node.toml").read_bytes()


def test_os_is_detected_from_the_root_partition_when_the_boot_partition_cannot_tell(tmp_path, nodes):
    image = make_pi_image(tmp_path / "x.img", issue=None, os_codename="trixie", tmp=tmp_path)
    assert provision("--image", image, "--node", nodes["27787-03"]) == 0
    assert fat_read(image, "/user-data") is not None


def test_unknown_os_asks_for_os_flag(tmp_path, nodes, capsys):
    image = make_pi_image(tmp_path / "x.img", issue=None, tmp=tmp_path)
    assert provision("--image", image, "--node", nodes["27787-03"]) == 2
    assert "--os" in capsys.readouterr().err
    assert provision("--image", image, "--node", nodes["27787-03"], "--os", "bookworm") == 0


def test_os_detection_rules():
    assert sdcard.detect_os({"user-data", "cmdline.txt"}, BOOKWORM_ISSUE) == "trixie"
    assert sdcard.detect_os({"cmdline.txt"}, BOOKWORM_ISSUE) == "bookworm"
    assert sdcard.detect_os(set(), "Raspberry Pi reference 2025-11-24\n") == "trixie"
    assert sdcard.detect_os(set(), "Raspberry Pi reference 2022-09-22\n") is None  # Bullseye: unsupported
    assert sdcard.detect_os(set(), None, "VERSION_CODENAME=bookworm\n") == "bookworm"


def test_not_a_raspberry_pi_image_is_refused(tmp_path, nodes, capsys):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * 4096)
    assert provision("--image", blank, "--node", nodes["27787-03"]) == 2
    assert "FAT" in capsys.readouterr().err


def test_private_key_passed_as_ssh_key_is_refused(image, nodes, tmp_path, capsys):
    bad = tmp_path / "id_ed25519"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    assert provision("--image", image, "--node", nodes["27787-03"], "--ssh-key", bad) == 2
    assert "PRIVATE" in capsys.readouterr().err
    assert fat_read(image, "/speaker-node/identity.json") is None


def test_mounted_boot_directory_with_bundle_and_progress(tmp_path, nodes):
    bootfs = tmp_path / "bootfs"
    bootfs.mkdir()
    (bootfs / "cmdline.txt").write_text(CMDLINE)
    (bootfs / "issue.txt").write_text(BOOKWORM_ISSUE)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "speaker_node-0.1.0-py3-none-any.whl").write_bytes(b"w" * 3_000_000)
    (bundle / "pip-24.0-py3-none-any.whl").write_bytes(b"p" * 1000)
    write_manifest(bundle, ["arm64"], ["3.11"], [])

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    node = sdcard.NodeBundle.load(nodes["27787-03"])
    sdcard.provision_card(
        sdcard.BootDirectory(bootfs), node, os_name="bookworm", bundle=bundle, progress_stream=stream
    )
    assert (
        bootfs / "speaker-node" / "bundle" / "speaker_node-0.1.0-py3-none-any.whl"
    ).stat().st_size == 3_000_000
    assert (bootfs / "speaker-node" / "bundle" / "manifest.json").exists()
    assert "(100%)" in stream.getvalue() and "MB" in stream.getvalue()
    assert tomllib.loads((bootfs / "speaker-node" / "node.toml").read_text())["node"]["id"] == "27787-03"

    quiet = io.StringIO()  # not a terminal: no progress noise in logs
    sdcard.provision_card(
        sdcard.BootDirectory(bootfs), node, os_name="bookworm", bundle=bundle, progress_stream=quiet
    )
    assert quiet.getvalue() == ""


def test_tampered_bundle_is_not_copied(tmp_path, nodes):
    bootfs = tmp_path / "bootfs"
    bootfs.mkdir()
    (bootfs / "cmdline.txt").write_text(CMDLINE)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "x-1-py3-none-any.whl").write_bytes(b"good")
    write_manifest(bundle, ["arm64"], ["3.11"], [])
    (bundle / "x-1-py3-none-any.whl").write_bytes(b"evil")
    node = sdcard.NodeBundle.load(nodes["27787-03"])
    with pytest.raises(Exception, match="does not match"):
        sdcard.provision_card(sdcard.BootDirectory(bootfs), node, os_name="bookworm", bundle=bundle)
    assert not (bootfs / "speaker-node").exists()
