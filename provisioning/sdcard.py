"""`speaker-provision sdcard`: put one node's identity, config and first-boot hook on a Raspberry Pi OS card.

Works on a mounted boot partition (--bootfs) or straight on an image file (--image, via mtools, no
root). Uses the OS's own first-boot mechanisms: Bookworm runs an Imager-style firstrun.sh from the
kernel command line; Trixie runs cloud-init from user-data/meta-data/network-config on the boot
partition. Both call speaker-node/speaker-firstboot.sh, which does the real work on the Pi.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TextIO

from node.brokeraddr import loopback_problem
from node.errors import ConfigError, DeviceError
from provisioning import bundle as bundle_mod
from provisioning.bundle_debs import RELEASES
from provisioning.fatimage import BootDirectory, FatImage, find_boot_partition, read_mbr
from provisioning.i18n import msg
from provisioning.node_new import DEFAULT_TIMEZONE, NODE_FILES
from provisioning.nodeid import parse_node_id

CARD_DIR = "/speaker-node"
MARKER = f"{CARD_DIR}/identity.json"
INSTALLED_MARKER = f"{CARD_DIR}/installed.json"  # renamed by speaker-firstboot.sh when done
FIRSTBOOT_DIR = Path(__file__).parent / "firstboot"
REPO_SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
# From an installed wheel the units are data files (setup.py data_files -> share/speaker-node/systemd).
INSTALLED_SYSTEMD = Path(sys.prefix) / "share" / "speaker-node" / "systemd"
DEFAULT_UNITS = REPO_SYSTEMD if REPO_SYSTEMD.is_dir() else INSTALLED_SYSTEMD
UNIT_FILES = ("speaker-node.service", "speaker-firstboot.service", "journald-speaker.conf", "watchdog.conf",
              "speaker-reboot.path", "speaker-reboot.service", "speaker-update.path",
              "speaker-update.service")
OPTIONAL_UNIT_FILES = ("99-speaker-modem.rules",)
HOOK_ARGS = (
    "systemd.run=/boot/firmware/firstrun.sh",
    "systemd.run_success_action=reboot",
    "systemd.unit=kernel-command-line.target",
)
CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config")
TRIXIE_FIRST_RELEASE = "2025-10-01"  # first Raspberry Pi OS image built on Debian 13
SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$"
)
ADMIN_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class NodeBundle:
    """What `speaker-provision node new` wrote for one node."""

    path: Path
    node_id: str
    fingerprint: str

    @classmethod
    def load(cls, path: Path) -> NodeBundle:
        path = Path(path)
        missing = [name for name in (*NODE_FILES, "identity.json") if not (path / name).is_file()]
        if missing:
            raise ConfigError(
                [
                    f"{path} is not a node folder from 'speaker-provision node new': "
                    f"missing {', '.join(missing)}"
                ]
            )
        ident = json.loads((path / "identity.json").read_text(encoding="utf-8"))
        parse_node_id(ident.get("node_id", ""))
        return cls(path, ident["node_id"], ident["fingerprint"])

    def marker(self) -> bytes:
        return (
            json.dumps({"node_id": self.node_id, "fingerprint": self.fingerprint}, indent=2) + "\n"
        ).encode()


class Progress:
    """Bytes and percentage on stderr when a person is watching; silent in scripts and logs."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None):
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        if self.live:
            pct = min(100, self.done * 100 // self.total)
            self.stream.write(
                f"\r{self.label}: {self.done / 1e6:7.1f} / {self.total / 1e6:.1f} MB ({pct:3d}%)"
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\n")


# --- pure decisions ---------------------------------------------------------------------------------


def add_firstrun_hook(cmdline: str) -> str:
    """Append the Imager-style first-boot arguments to the single cmdline.txt line (idempotent)."""
    line = cmdline.splitlines()[0] if cmdline.strip() else ""
    words = [
        w
        for w in line.split()
        if not w.startswith(
            ("systemd.run=", "systemd.run_success_action=", "systemd.unit=kernel-command-line.target")
        )
    ]
    return " ".join([*words, *HOOK_ARGS]) + "\n"


def detect_os(files: set[str], issue_txt: str | None, os_release: str | None = None) -> str | None:
    """'bookworm', 'trixie' or None from what is visible on the card."""
    if os_release:
        match = re.search(r"^VERSION_CODENAME=(\w+)", os_release, re.M)
        if match and match[1] in ("bookworm", "trixie"):
            return match[1]
    if any(name in files for name in CLOUD_INIT_FILES):
        return "trixie"  # cloud-init seed files appeared with the first Trixie image
    if issue_txt:
        match = re.search(r"(\d{4}-\d{2}-\d{2})", issue_txt)
        if match:
            if match[1] >= TRIXIE_FIRST_RELEASE:
                return "trixie"
            if match[1] >= "2023-10-10":  # first Bookworm image
                return "bookworm"
    return None


@dataclass(frozen=True)
class Target:
    """What the card will run: Debian architecture and CPython version."""

    arch: str  # arm64 | armhf
    python: str  # 3.11


ELF_MACHINES = {0xB7: "arm64", 0x28: "armhf"}
OURS = ("speaker-firstboot.sh", "speaker-provision sdcard")  # text in the hooks and seeds we write


def arch_of_elf(head: bytes) -> str | None:
    """Pure: the architecture of an ELF binary's header (e_machine), or None."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return ELF_MACHINES.get(int.from_bytes(head[18:20], "little"))


def python_of_listing(names: list[str]) -> str | None:
    """Pure: the newest python3.N among the entries of /usr/lib."""
    found = [m[1] for n in names if (m := re.fullmatch(r"python(3\.\d+)", n))]
    return max(found, key=lambda v: int(v.split(".")[1])) if found else None


def guess_target(boot_files: set[str], os_name: str) -> Target:
    """A mounted boot partition without its root: 32-bit images carry kernel7l.img, 64-bit ones do not."""
    arch = "armhf" if boot_files & {"kernel7l.img", "kernel7.img", "kernel.img"} else "arm64"
    return Target(arch, RELEASES.get(os_name, "3.11"))


def bundle_problems(manifest: dict, target: Target, os_name: str) -> list[str]:
    """Pure: why a card made with this bundle could not finish first boot on TARGET ([] = fine)."""
    problems = [f"the bundle reports missing pieces: {m}" for m in manifest.get("missing", [])]
    names = [Path(f["name"]).name for f in manifest.get("files", [])]
    requirements = [*manifest.get("requirements", bundle_mod.RUNTIME_REQUIREMENTS), bundle_mod.NODE_DIST]
    projects = {bundle_mod.canonical(re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0]) for r in requirements}
    for project in sorted(projects | set(manifest.get("closure", []))):
        if not any(bundle_mod.wheel_name(n) == project and bundle_mod.wheel_fits(n, target.arch, target.python)
                   for n in names):
            problems.append(f"no {project} wheel for {target.arch} / Python {target.python} in the bundle "
                            f"(speaker-provision bundle --arch {target.arch} --python {target.python})")
    key = f"{os_name}-{target.arch}"
    if not any(Path(d["name"]).name.startswith("libvlc5_") for d in manifest.get("debs", {}).get(key, [])):
        problems.append(f"no libVLC Debian packages for {os_name} {target.arch} in the bundle "
                        f"(Raspberry Pi OS Lite has none; rebuild the bundle without --no-debs)")
    return problems


def node_broker_problems(node_toml: bytes) -> list[str]:
    try:
        data = tomllib.loads(node_toml.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return [f"node.toml: {exc}"]
    servers = data.get("broker", {}).get("servers") or []
    if not servers:
        return ["node.toml has no [broker] servers"]
    return [p for s in servers if (p := loopback_problem(str(s)))]


def is_customised(text: bytes | None) -> bool:
    """Pure: a seed file with settings in it that we did not write (comments and the header are not)."""
    if not text:
        return False
    decoded = text.decode("utf-8", "replace")
    if any(mark in decoded for mark in OURS):
        return False
    meaningful = [ln for ln in decoded.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return bool(meaningful)


def check_card_identity(existing: bytes | None, node: NodeBundle, force: bool) -> None:
    if not existing:
        return
    try:
        other = json.loads(existing)
    except ValueError:
        other = {"node_id": "?", "fingerprint": "?"}
    same = other.get("node_id") == node.node_id and other.get("fingerprint") == node.fingerprint
    if not same and not force:
        raise ConfigError(
            [
                msg(
                    "card_other_node",
                    other=other.get("node_id"),
                    fp=other.get("fingerprint"),
                    node_id=node.node_id,
                )
            ]
        )


def render_cloud_init(
    node: NodeBundle, ssh_key: str | None, admin_user: str, timezone: str = DEFAULT_TIMEZONE
) -> dict[str, bytes]:
    users = "users: []\n"
    if ssh_key:
        users = (
            f"users:\n  - name: {admin_user}\n    groups: [sudo, adm, gpio, audio, dialout]\n"
            f'    shell: /bin/bash\n    lock_passwd: true\n    sudo: "ALL=(ALL) NOPASSWD:ALL"\n'
            f"    ssh_authorized_keys:\n      - {json.dumps(ssh_key)}\n"
        )
    values = {
        "node_id": node.node_id,
        "timezone": timezone,
        "users_block": users.rstrip("\n"),
        "instance_id": f"speaker-{node.node_id}-{node.fingerprint.replace(':', '')[:16].lower()}",
    }
    return {
        name: Template((FIRSTBOOT_DIR / f"{name}.in").read_text()).substitute(values).encode()
        for name in CLOUD_INIT_FILES
    }


def firstboot_env(node: NodeBundle, admin_user: str, timezone: str = DEFAULT_TIMEZONE) -> bytes:
    return f"NODE_ID={node.node_id}\nADMIN_USER={admin_user}\nTIMEZONE={timezone}\n".encode()


def read_ssh_key(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if "PRIVATE KEY" in text:
        raise ConfigError([f"{path} is a PRIVATE key; pass the .pub file"])
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1 or not SSH_KEY_RE.match(lines[0]):
        raise ConfigError([f"{path} is not one OpenSSH public key line (ssh-ed25519 AAAA...)"])
    return lines[0]


# --- IO -----------------------------------------------------------------------------------------------


def _image_os_release(image: Path) -> str | None:
    """/etc/os-release from the ext4 root partition of an image (debugfs reads at an offset, no root)."""
    try:
        parts = [p for p in read_mbr(image) if p.type_id == 0x83]
    except ConfigError:
        return None
    for part in parts:
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            try:
                proc = subprocess.run(
                    ["debugfs", "-R", f"cat {path}", f"{image}?offset={part.offset}"],
                    capture_output=True,
                    check=False,
                    timeout=30,
                )
            except (OSError, subprocess.TimeoutExpired):
                return None
            if proc.returncode == 0 and b"VERSION_CODENAME" in proc.stdout:
                return proc.stdout.decode(errors="replace")
    return None


def load_manifest(bundle: Path) -> dict:
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError([f"{bundle} has no manifest.json: build it with 'speaker-provision bundle'"])
    return json.loads(manifest_path.read_text(encoding="utf-8"))


def _bundle_files(bundle: Path, manifest: dict, debs_key: str) -> list[tuple[Path, str]]:
    """(file, its path on the card) for the wheels, the target's Debian packages and the manifest;
    every hash is checked before anything is copied."""
    entries = [(e, Path(e["name"]).name) for e in manifest.get("files", [])]
    entries += [(e, f"debs/{Path(e['name']).name}") for e in manifest.get("debs", {}).get(debs_key, [])]
    files = []
    for entry, on_card in entries:
        path = bundle / entry["name"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if digest != entry["sha256"]:
            raise ConfigError([f"bundle file {entry['name']} is missing or does not match manifest.json"])
        files.append((path, on_card))
    return [*files, (bundle / "manifest.json", "manifest.json")]


def provision_card(
    card,
    node: NodeBundle,
    *,
    os_name: str,
    ssh_key: str | None = None,
    bundle: Path | None = None,
    target: Target | None = None,
    units_dir: Path = DEFAULT_UNITS,
    force: bool = False,
    admin_user: str = "tech",
    progress_stream: TextIO | None = None,
) -> list[str]:
    """Check everything first (a card that cannot finish first boot is never written), then write;
    the identity marker goes last but one, the boot hook last. Returns notes for the technician."""
    if os_name not in ("bookworm", "trixie"):
        raise ConfigError([f"--os must be bookworm or trixie, got {os_name!r}"])
    if not ADMIN_USER_RE.match(admin_user):
        raise ConfigError([f"admin user {admin_user!r} is not a valid Linux user name"])
    cmdline = card.read("/cmdline.txt")
    if cmdline is None:
        raise ConfigError([msg("not_boot_partition", path=card.describe())])
    check_card_identity(card.read(MARKER) or card.read(INSTALLED_MARKER), node, force)
    unit_paths = [units_dir / name for name in UNIT_FILES]
    missing = [str(p) for p in unit_paths if not p.is_file()]
    if missing:
        raise ConfigError([f"systemd files not found: {', '.join(missing)} (pass --units DIR)"])
    target = target or guess_target(set(card.listdir("/")), os_name)
    problems = node_broker_problems((node.path / "node.toml").read_bytes())
    if bundle is None:
        problems.append("no --bundle: a card without the offline bundle cannot install the node software, "
                        "and first boot would fail (build one with 'speaker-provision bundle -o BUNDLE "
                        f"--arch {target.arch} --python {target.python}')")
        manifest = {}
    else:
        manifest = load_manifest(bundle)
        problems += bundle_problems(manifest, target, os_name)
    notes: list[str] = []
    theirs_firstrun = card.read("/firstrun.sh")
    keep_firstrun = os_name == "bookworm" and is_customised(theirs_firstrun)
    if os_name == "trixie" and is_customised(card.read("/user-data")):
        problems.append("the card's user-data has a Raspberry Pi Imager customisation (cloud-init) that this "
                        "tool cannot merge: write the card without Imager's OS customisation, or put those "
                        "settings (Wi-Fi, user) in after first boot")
    keep_network = os_name == "trixie" and is_customised(card.read("/network-config"))
    if problems:
        raise ConfigError([f"refusing to finish {card.describe()}: {p}" for p in problems])
    bundle_files = _bundle_files(bundle, manifest, f"{os_name}-{target.arch}")

    for name in NODE_FILES:  # a previous identity's secrets are overwritten, not left in free clusters
        card.erase(f"{CARD_DIR}/{name}")
    card.remove_tree(f"{CARD_DIR}/units")
    card.remove_tree(f"{CARD_DIR}/bundle")
    card.mkdir(CARD_DIR)
    for name in NODE_FILES:
        card.copy_in(node.path / name, f"{CARD_DIR}/{name}")
    card.write(f"{CARD_DIR}/firstboot.env", firstboot_env(node, admin_user))
    if ssh_key:
        card.write(f"{CARD_DIR}/authorized_keys", (ssh_key + "\n").encode())
    else:
        card.erase(f"{CARD_DIR}/authorized_keys")
    card.copy_in(FIRSTBOOT_DIR / "speaker-firstboot.sh", f"{CARD_DIR}/speaker-firstboot.sh")
    for path in unit_paths + [units_dir / n for n in OPTIONAL_UNIT_FILES if (units_dir / n).is_file()]:
        card.copy_in(path, f"{CARD_DIR}/units/{path.name}")
    progress = Progress(
        msg("copying", name="bundle"), sum(p.stat().st_size for p, _ in bundle_files), progress_stream
    )
    for path, on_card in bundle_files:
        card.copy_in(path, f"{CARD_DIR}/bundle/{on_card}", progress)
    progress.finish()
    card.erase(INSTALLED_MARKER)
    card.erase("/FIRSTBOOT-FAILED.txt")
    card.write(MARKER, node.marker())

    if os_name == "bookworm":
        if keep_firstrun:
            # The technician's Imager settings (Wi-Fi, user, locale) run first, then ours.
            card.write(f"{CARD_DIR}/imager-firstrun.sh", theirs_firstrun)
            notes.append("kept the card's Imager firstrun.sh: it runs first, then speaker-node's first boot")
        card.copy_in(FIRSTBOOT_DIR / "firstrun.sh", "/firstrun.sh")
        card.write("/cmdline.txt", add_firstrun_hook(cmdline.decode()).encode())
    else:
        for name, data in render_cloud_init(node, ssh_key, admin_user).items():
            if name == "network-config" and keep_network:
                notes.append("kept the card's network-config (Imager network settings)")
                continue
            card.write(f"/{name}", data)
    return notes


def image_target(image: Path) -> Target | None:
    """Architecture (ELF header of /usr/bin/dash) and Python (/usr/lib/python3.N) of an image's root
    partition, read with debugfs at the partition's offset (no root, no loop device)."""
    try:
        parts = [p for p in read_mbr(image) if p.type_id == 0x83]
    except ConfigError:
        return None
    for part in parts:
        where = f"{image}?offset={part.offset}"
        try:
            head = subprocess.run(["debugfs", "-R", "cat /usr/bin/dash", where], capture_output=True,
                                  check=False, timeout=60).stdout[:64]
            listing = subprocess.run(["debugfs", "-R", "ls -p /usr/lib", where], capture_output=True,
                                     check=False, timeout=60).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return None
        arch = arch_of_elf(head)
        names = [fields[5] for line in listing.splitlines() if len(fields := line.split("/")) > 5]
        python = python_of_listing(names)
        if arch and python:
            return Target(arch, python)
    return None


def _open_card(args):
    if args.bootfs:
        return BootDirectory(args.bootfs), None
    if not args.image.is_file():
        raise ConfigError([f"{args.image} does not exist"])
    try:
        part = find_boot_partition(args.image)
    except ConfigError as exc:
        raise ConfigError([msg("no_boot_partition", image=args.image)]) from exc
    return FatImage(args.image, part.offset), args.image


def main(argv: list[str]) -> int:
    prog = "speaker-provision sdcard"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bootfs", type=Path, help="mounted boot partition of the card (bootfs)")
    where.add_argument("--image", type=Path, help="Raspberry Pi OS .img file (written without root)")
    parser.add_argument("--node", type=Path, required=True, help="node folder from 'node new'")
    parser.add_argument("--ssh-key", type=Path, help="technician's OpenSSH public key (.pub); key-only login")
    parser.add_argument("--admin-user", default="tech", help="login for the technician (default: tech)")
    parser.add_argument("--bundle", type=Path,
                        help="offline bundle from 'speaker-provision bundle' (wheels + libVLC .debs)")
    parser.add_argument("--arch", choices=("arm64", "armhf"),
                        help="the card's architecture (default: read from the image, or guessed from bootfs)")
    parser.add_argument("--python", metavar="3.X", help="the card's Python (default: from the image or --os)")
    parser.add_argument("--os", choices=("bookworm", "trixie", "auto"), default="auto")
    parser.add_argument("--units", type=Path, default=DEFAULT_UNITS, help="folder with the systemd files")
    parser.add_argument("--no-label", action="store_true", help="do not write the cabinet label")
    parser.add_argument("--force", action="store_true", help="overwrite another node's identity on the card")
    args = parser.parse_args(argv)
    try:
        node = NodeBundle.load(args.node)
        ssh_key = read_ssh_key(args.ssh_key) if args.ssh_key else None
        card, image = _open_card(args)
        os_name = args.os
        if os_name == "auto":
            files = set(card.listdir("/"))
            issue = card.read("/issue.txt")
            os_name = detect_os(
                files,
                issue.decode(errors="replace") if issue else None,
                _image_os_release(image) if image else None,
            )
            if os_name is None:
                raise ConfigError([msg("os_unknown")])
        target = (image_target(image) if image else None) or guess_target(set(card.listdir("/")), os_name)
        target = Target(args.arch or target.arch, args.python or target.python)
        notes = provision_card(
            card,
            node,
            os_name=os_name,
            ssh_key=ssh_key,
            bundle=args.bundle,
            target=target,
            units_dir=args.units,
            force=args.force,
            admin_user=args.admin_user,
        )
        label_path = None
        if not args.no_label:
            from provisioning.label import write_label

            label_path = write_label(node.path, node.path.parent / f"{node.node_id}-label.svg")
    except (ConfigError, DeviceError, OSError) as exc:
        for problem in getattr(exc, "problems", [str(exc)]):
            print(f"{prog}: {problem}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"{prog}: {note}")
    print(msg("card_written", node_id=node.node_id, os=os_name))
    if label_path:
        print(msg("label_written", path=label_path))
    return 0
