"""Helpers for the provisioning tests (no tests here): a minimal district workspace made with
provisioning.pki, a two-partition Raspberry Pi OS-like disk image built without root, mtools readers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from provisioning import pki

SECTOR = 512
BOOT_START, BOOT_SECTORS = 2048, 131072  # 64 MiB FAT32, like a (smaller) bootfs
ROOT_START = BOOT_START + BOOT_SECTORS
IMAGE_MB = 100
BOOKWORM_ISSUE = (
    "Raspberry Pi reference 2024-11-19\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen\n"
)
CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=deadbeef-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
)
MTOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")


def make_district(root: Path, servers: str = "broker.example.vn:8883") -> Path:
    """What `speaker-district init` leaves behind, as far as node provisioning needs it."""
    tls = root / "tls"
    ca_key, ca = pki.create_ca("test district CA")
    pki.write_private_key(tls / "ca.key", ca_key)
    pki.write_cert(tls / "ca.crt", ca)
    key, cert = pki.issue_server_cert(ca_key, ca, ["localhost", "127.0.0.1"])
    pki.write_private_key(tls / "broker.key", key)
    pki.write_cert(tls / "broker.crt", cert)
    pki.write_crl(tls / "crl.pem", pki.build_crl(ca_key, ca, []))
    (root / "trust.json").write_text(
        '{"payloadType": "application/vnd.speaker.trust+json", "signatures": []}\n'
    )
    (root / "district.toml").write_text(f'district = "test"\nbroker = "{servers}"\ntopic_prefix = "spk"\n')
    return root


def run(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, **kw)


def make_pi_image(
    path: Path,
    *,
    issue: str | None = BOOKWORM_ISSUE,
    cloud_init: bool = False,
    os_codename: str | None = None,
    tmp: Path | None = None,
    arch: str | None = "arm64",
    python: str = "3.11",
) -> Path:
    """MBR + FAT32 boot (cmdline.txt, config.txt, issue.txt) + ext4 root; no root privileges used."""
    tmp = tmp or path.parent
    with open(path, "wb") as f:
        f.truncate(IMAGE_MB * 1024 * 1024)
    table = f"label: dos\nstart={BOOT_START}, size={BOOT_SECTORS}, type=c\nstart={ROOT_START}, type=83\n"
    run("sfdisk", "--no-reread", "-q", path, input=table.encode())
    run("mkfs.vfat", "-F", "32", "-n", "BOOTFS", "--offset", BOOT_START, path, BOOT_SECTORS // 2)
    boot_files = {"cmdline.txt": CMDLINE, "config.txt": "arm_64bit=1\ndtparam=audio=on\n"}
    if issue:
        boot_files["issue.txt"] = issue
    if cloud_init:
        boot_files.update(
            {
                "user-data": "#cloud-config\n",
                "meta-data": "instance-id: rpi\n",
                "network-config": "network:\n  version: 2\n",
            }
        )
    staging = tmp / "boot-staging"
    staging.mkdir(exist_ok=True)
    for name, text in boot_files.items():
        (staging / name).write_text(text)
        run("mcopy", "-i", f"{path}@@{BOOT_START * SECTOR}", staging / name, f"::/{name}", env=MTOOLS_ENV)
    rootfs = tmp / "root-staging"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    if arch:  # what sdcard reads to learn the card's architecture and Python
        (rootfs / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        machine = {"arm64": 0xB7, "armhf": 0x28}[arch]
        (rootfs / "usr" / "bin" / "dash").write_bytes(b"\x7fELF" + bytes(14) + machine.to_bytes(2, "little")
                                                      + bytes(44))
        (rootfs / "usr" / "lib" / f"python{python}").mkdir(parents=True, exist_ok=True)
    if os_codename:
        (rootfs / "etc" / "os-release").write_text(f'PRETTY_NAME="Debian"\nVERSION_CODENAME={os_codename}\n')
    root_kib = (IMAGE_MB * 1024 * 1024 - ROOT_START * SECTOR) // 1024
    run(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-d",
        rootfs,
        "-E",
        f"offset={ROOT_START * SECTOR}",
        path,
        f"{root_kib}k",
    )
    return path


def fat_read(image: Path, path: str) -> bytes | None:
    proc = subprocess.run(
        ["mcopy", "-n", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::{path}", "-"],
        capture_output=True,
        env=MTOOLS_ENV,
    )
    return proc.stdout if proc.returncode == 0 else None


def fat_list(image: Path, path: str = "/") -> set[str]:
    proc = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::{path}"],
        capture_output=True,
        env=MTOOLS_ENV,
        text=True,
    )
    return {line.rstrip("/").rsplit("/", 1)[-1] for line in proc.stdout.splitlines() if line.strip()}


def fat_attributes(image: Path, path: str) -> str:
    """mattrib flags (R = read-only, H = hidden, S = system, A = archive): all FAT can tell of a mode."""
    proc = run("mattrib", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::{path}", env=MTOOLS_ENV, text=True)
    return proc.stdout.split("::")[0]


# A bundle with the names a real one has (tiny contents): what `sdcard` checks is which wheels and
# Debian packages are there for which architecture and Python, and their hashes.
PURE_WHEELS = ("paho_mqtt-2.2.0-py3-none-any.whl", "gpiozero-2.0.1-py3-none-any.whl",
               "colorzero-2.0-py2.py3-none-any.whl", "pyserial-3.5-py2.py3-none-any.whl",
               "python_vlc-3.0.21203-py3-none-any.whl", "pip-24.0-py3-none-any.whl",
               "pycparser-2.22-py3-none-any.whl", "speaker_node-0.1.0-py3-none-any.whl")
MACHINES = {"arm64": "aarch64", "armhf": "armv7l"}


def make_fake_bundle(path: Path, archs=("arm64",), pythons=("3.11",), releases=("bookworm",),
                     skip: tuple[str, ...] = (), missing: list[str] | None = None) -> Path:
    from provisioning.bundle import write_manifest

    path.mkdir(parents=True, exist_ok=True)
    names = list(PURE_WHEELS)
    for arch in archs:
        machine = MACHINES[arch]
        names.append(f"cryptography-44.0.0-cp39-abi3-manylinux_2_31_{machine}.whl")
        for version in pythons:
            tag = "cp" + version.replace(".", "")
            names.append(f"cffi-1.17.1-{tag}-{tag}-linux_{machine}.whl")
    for name in names:
        if not name.startswith(skip):
            (path / name).write_bytes(name.encode())
    debs = {}
    for release in releases:
        for arch in archs:
            folder = path / f"debs-{release}-{arch}"
            folder.mkdir(exist_ok=True)
            files = []
            for pkg in ("libvlc5_3.0.21-0+deb12u1", "libvlccore9_3.0.21-0+deb12u1", "vlc-plugin-base_3.0.21-0"):
                deb = folder / f"{pkg}_{arch}.deb"
                deb.write_bytes(deb.name.encode())
                files.append(deb)
            (folder / "Packages").write_text("Package: libvlc5\n")
            (folder / "REQUESTED").write_text("libvlc5 vlc-plugin-base\n")
            debs[f"{release}-{arch}"] = [*files, folder / "Packages", folder / "REQUESTED"]
    write_manifest(path, list(archs), list(pythons), missing or [], debs)
    return path
