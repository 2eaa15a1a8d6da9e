"""`speaker-provision sdcard` on a real two-partition disk image (written with mtools, no root) and on a
mounted-boot-partition directory; everything read back independently with mtools."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib

import pytest
from test_provision_support import (
    BOOKWORM_ISSUE,
    CMDLINE,
    fat_attributes,
    fat_list,
    fat_read,
    make_district,
    make_fake_bundle,
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


@pytest.fixture(scope="module")
def full_bundle(tmp_path_factory):
    return make_fake_bundle(tmp_path_factory.mktemp("bundle"), archs=("arm64", "armhf"),
                            pythons=("3.11", "3.13"), releases=("bookworm", "trixie"))


@pytest.fixture(autouse=True)
def _default_bundle(full_bundle, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "DEFAULT_BUNDLE", full_bundle)


DEFAULT_BUNDLE = None


def provision(*args) -> int:
    """The CLI, with a complete bundle unless the test passes its own."""
    argv = [str(a) for a in args]
    if "--bundle" not in argv:
        argv += ["--bundle", str(DEFAULT_BUNDLE)]
    return sdcard.main(argv)


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
            "speaker-reboot.path", "speaker-reboot.service", "speaker-update.path", "speaker-update.service"}
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


def boot_dir(tmp_path, files=None):
    bootfs = tmp_path / "bootfs"
    bootfs.mkdir()
    (bootfs / "cmdline.txt").write_text(CMDLINE)
    (bootfs / "issue.txt").write_text(BOOKWORM_ISSUE)
    for name, text in (files or {}).items():
        (bootfs / name).write_text(text)
    return bootfs


def test_mounted_boot_directory_with_bundle_and_progress(tmp_path, nodes):
    bootfs = boot_dir(tmp_path)
    bundle = make_fake_bundle(tmp_path / "bundle")
    (bundle / "speaker_node-0.1.0-py3-none-any.whl").write_bytes(b"w" * 3_000_000)
    write_manifest(bundle, ["arm64"], ["3.11"], [], {"bookworm-arm64": sorted((bundle / "debs-bookworm-arm64")
                                                                              .glob("*.deb"))})

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    node = sdcard.NodeBundle.load(nodes["27787-03"])
    sdcard.provision_card(
        sdcard.BootDirectory(bootfs), node, os_name="bookworm", bundle=bundle, progress_stream=stream
    )
    on_card = bootfs / "speaker-node" / "bundle"
    assert (on_card / "speaker_node-0.1.0-py3-none-any.whl").stat().st_size == 3_000_000
    assert (on_card / "manifest.json").exists()
    assert sorted(p.name for p in (on_card / "debs").iterdir())[0].startswith("libvlc5_")
    assert "(100%)" in stream.getvalue() and "MB" in stream.getvalue()
    assert tomllib.loads((bootfs / "speaker-node" / "node.toml").read_text())["node"]["id"] == "27787-03"

    quiet = io.StringIO()  # not a terminal: no progress noise in logs
    sdcard.provision_card(
        sdcard.BootDirectory(bootfs), node, os_name="bookworm", bundle=bundle, progress_stream=quiet
    )
    assert quiet.getvalue() == ""


def test_tampered_bundle_is_not_copied(tmp_path, nodes):
    bootfs = boot_dir(tmp_path)
    bundle = make_fake_bundle(tmp_path / "bundle")
    (bundle / "pyserial-3.5-py2.py3-none-any.whl").write_bytes(b"evil")
    node = sdcard.NodeBundle.load(nodes["27787-03"])
    with pytest.raises(Exception, match="does not match"):
        sdcard.provision_card(sdcard.BootDirectory(bootfs), node, os_name="bookworm", bundle=bundle)
    assert not (bootfs / "speaker-node").exists()


def refused(capsys, image, *args) -> str:
    assert provision("--image", image, *args) == 2
    err = capsys.readouterr().err
    assert fat_read(image, "/speaker-node/identity.json") is None and fat_read(image, "/firstrun.sh") is None
    assert "systemd.run=" not in fat_read(image, "/cmdline.txt").decode()
    return err


def test_card_without_a_bundle_is_refused_and_keeps_no_secrets(image, nodes, capsys):
    assert sdcard.main(["--image", str(image), "--node", str(nodes["27787-03"])]) == 2
    assert "--bundle" in capsys.readouterr().err
    node_dir = nodes["27787-03"]
    with pytest.raises(Exception, match="no --bundle"):
        sdcard.provision_card(sdcard.FatImage(image), sdcard.NodeBundle.load(node_dir), os_name="bookworm")
    assert fat_read(image, "/speaker-node/node.key") is None


def test_bundle_without_a_wheel_for_the_image_architecture_is_refused(image, nodes, tmp_path, capsys):
    armhf_only = make_fake_bundle(tmp_path / "armhf", archs=("armhf",))
    err = refused(capsys, image, "--node", nodes["27787-03"], "--bundle", armhf_only)
    assert "no cryptography wheel for arm64 / Python 3.11" in err and "no cffi wheel for arm64" in err
    assert "no libVLC Debian packages for bookworm arm64" in err


def test_bundle_for_another_python_is_refused(tmp_path, nodes, capsys):
    trixie = make_pi_image(tmp_path / "trixie.img", cloud_init=True, os_codename="trixie", python="3.13",
                           tmp=tmp_path)
    bookworm_bundle = make_fake_bundle(tmp_path / "b", pythons=("3.11",), releases=("bookworm",))
    err = refused(capsys, trixie, "--node", nodes["27787-03"], "--bundle", bookworm_bundle)
    assert "no cffi wheel for arm64 / Python 3.13" in err and "no libVLC Debian packages for trixie" in err


def test_armhf_image_is_read_from_its_root_partition(tmp_path, nodes, capsys):
    armhf = make_pi_image(tmp_path / "armhf.img", arch="armhf", tmp=tmp_path)
    assert sdcard.image_target(armhf) == sdcard.Target("armhf", "3.11")
    err = refused(capsys, armhf, "--node", nodes["27787-03"], "--bundle", make_fake_bundle(tmp_path / "b"))
    assert "for armhf" in err
    assert provision("--image", armhf, "--node", nodes["27787-03"]) == 0  # the full bundle has armhf


def test_incomplete_bundle_is_refused_by_what_it_misses(image, nodes, tmp_path, capsys):
    bundle = make_fake_bundle(tmp_path / "b", missing=["cffi>=2.0.0 (needed by cryptography) [armhf]: no wheel"])
    err = refused(capsys, image, "--node", nodes["27787-03"], "--bundle", bundle)
    assert "cffi>=2.0.0 (needed by cryptography)" in err


def test_loopback_broker_in_the_node_config_is_refused(image, district, tmp_path, capsys):
    path, _ = create_node(district, make_identity("27787", "760", "75", 9), tmp_path, servers=["127.0.0.1:8883"],
                          allow_loopback=True)
    err = refused(capsys, image, "--node", path)
    assert "127.0.0.1:8883 is a loopback address" in err


def test_imager_firstrun_is_kept_and_runs_before_ours(tmp_path, nodes):
    theirs = "#!/bin/bash\nset +e\necho imager-was-here > \"$MARK\"\nrm -f /boot/firstrun.sh\nexit 0\n"
    bootfs = boot_dir(tmp_path, {"firstrun.sh": theirs})
    node = sdcard.NodeBundle.load(nodes["27787-03"])
    notes = sdcard.provision_card(sdcard.BootDirectory(bootfs), node, os_name="bookworm",
                                  bundle=make_fake_bundle(tmp_path / "b"))
    assert any("Imager firstrun.sh" in n for n in notes)
    assert (bootfs / "speaker-node" / "imager-firstrun.sh").read_text() == theirs
    assert (bootfs / "firstrun.sh").read_bytes() == (sdcard.FIRSTBOOT_DIR / "firstrun.sh").read_bytes()
    # run the hook against this directory: theirs first, then ours (a stand-in that records its turn)
    order = tmp_path / "order"
    (bootfs / "speaker-node" / "speaker-firstboot.sh").write_text(
        f'#!/bin/bash\n[ -f "$MARK" ] && echo ours-after-imager > {order}\n')
    env = {"PATH": "/usr/bin:/bin", "MARK": str(tmp_path / "mark"), "SPEAKER_BOOT": str(bootfs)}
    subprocess.run(["bash", str(bootfs / "firstrun.sh")], env=env, check=True, timeout=30)
    assert order.read_text() == "ours-after-imager\n"
    assert not (bootfs / "firstrun.sh").exists() and "systemd.run" not in (bootfs / "cmdline.txt").read_text()
    # a second provisioning of the same card does not mistake our hook for the technician's
    notes = sdcard.provision_card(sdcard.BootDirectory(bootfs), node, os_name="bookworm",
                                  bundle=make_fake_bundle(tmp_path / "b"))
    assert notes == []


def test_trixie_card_with_imager_cloud_init_settings_is_refused_with_a_reason(tmp_path, nodes):
    user_data = "#cloud-config\nusers:\n  - name: pi\n    passwd: $6$abc\nwifi: ...\n"
    bootfs = boot_dir(tmp_path, {"user-data": user_data, "meta-data": "instance-id: rpi\n"})
    node = sdcard.NodeBundle.load(nodes["27787-03"])
    with pytest.raises(Exception, match="Imager customisation") as info:
        sdcard.provision_card(sdcard.BootDirectory(bootfs), node, os_name="trixie",
                              bundle=make_fake_bundle(tmp_path / "b", releases=("trixie",), pythons=("3.13",)),
                              target=sdcard.Target("arm64", "3.13"))
    assert "user-data" in str(info.value)
    assert (bootfs / "user-data").read_text() == user_data and not (bootfs / "speaker-node").exists()


def test_target_detection_rules():
    assert sdcard.arch_of_elf(b"\x7fELF" + bytes(14) + b"\xb7\x00") == "arm64"
    assert sdcard.arch_of_elf(b"\x7fELF" + bytes(14) + b"\x28\x00") == "armhf"
    assert sdcard.arch_of_elf(b"MZ") is None
    assert sdcard.python_of_listing(["python3", "python3.11", "python3.13", "python3.9"]) == "3.13"
    assert sdcard.guess_target({"kernel7l.img", "kernel8.img"}, "bookworm") == sdcard.Target("armhf", "3.11")
    assert sdcard.guess_target({"kernel8.img", "kernel_2712.img"}, "trixie") == sdcard.Target("arm64", "3.13")
