"""The Debian packages a Raspberry Pi OS Lite card needs and does not have: libVLC, carried offline.

python-vlc is only a binding; it loads libvlc.so.5, and Raspberry Pi OS Lite has no libVLC. The laptop
downloads libvlc5 + vlc-plugin-base (decoders, the ALSA output) and their whole dependency closure for
the target release and architecture with a private apt configuration (nothing on the laptop changes:
its own apt lists, architectures and dpkg database are untouched). The closure is computed against an
empty dpkg database, so it is complete whatever the image already has; first boot installs only the
packages the image lacks or has older (speaker-firstboot.sh, step 4), offline, with apt resolving the
order among the local files.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from node.errors import ConfigError

DEB_PACKAGES = ["libvlc5", "vlc-plugin-base"]
RELEASES = {"bookworm": "3.11", "trixie": "3.13"}  # Raspberry Pi OS release -> its Python
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def release_for_python(version: str) -> str:
    for release, python in RELEASES.items():
        if python == version:
            return release
    raise ConfigError([f"no Raspberry Pi OS release uses Python {version} (bookworm 3.11, trixie 3.13)"])


def debs_dirname(release: str, arch: str) -> str:
    return f"debs-{release}-{arch}"


@dataclass(frozen=True)
class AptRoot:
    """A private apt configuration under `base` for one release and architecture."""

    base: Path
    release: str
    arch: str
    mirror: str = MIRROR

    def sources(self) -> str:
        arch = f"[arch={self.arch} signed-by={KEYRING}]"
        lines = [f"deb {arch} {self.mirror} {self.release} main",
                 f"deb {arch} {self.mirror} {self.release}-updates main"]
        if self.mirror == MIRROR:
            lines.append(f"deb {arch} {SECURITY} {self.release}-security main")
        return "\n".join(lines) + "\n"

    def config(self) -> str:
        return (
            f'Dir "{self.base}/";\n'
            f'Dir::State::status "{self.base}/status";\n'
            f'Dir::Etc::sourcelist "{self.base}/sources.list";\n'
            f'Dir::Etc::sourceparts "{self.base}/empty";\n'
            f'Dir::Etc::preferencesparts "{self.base}/empty";\n'
            f'Dir::Etc::parts "{self.base}/empty";\n'
            f'APT::Architecture "{self.arch}";\n'
            f'APT::Architectures {{ "{self.arch}"; }};\n'
            'APT::Install-Recommends "false";\n'
            'Debug::NoLocking "true";\n'
            'APT::Sandbox::User "root";\n'  # a private cache the _apt user may not be able to reach
        )

    def prepare(self) -> Path:
        for sub in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "empty"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "status").write_text("")
        (self.base / "sources.list").write_text(self.sources())
        conf = self.base / "apt.conf"
        conf.write_text(self.config())
        return conf


def apt_commands(apt: AptRoot, dest: Path) -> list[list[str]]:
    conf = apt.base / "apt.conf"
    env = ["env", f"APT_CONFIG={conf}"]
    return [
        [*env, "apt-get", "-q", "update"],
        [*env, "apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
         "-o", f"Dir::Cache::archives={dest}/", "install", *DEB_PACKAGES],
    ]


def download_debs(work: Path, out: Path, release: str, arch: str) -> tuple[list[Path], str | None]:
    """Download the closure into out/debs-RELEASE-ARCH/. Returns (files, problem or None)."""
    dest = out / debs_dirname(release, arch)
    dest.mkdir(parents=True, exist_ok=True)
    apt = AptRoot(work / f"apt-{release}-{arch}", release, arch)
    apt.prepare()
    for command in apt_commands(apt, dest):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
        except FileNotFoundError:
            return [], "apt-get is not installed on this machine (a Debian/Ubuntu laptop is needed)"
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith(("E:", "Err"))]
            return [], f"apt-get for {' '.join(DEB_PACKAGES)} [{release} {arch}]: " + (
                "; ".join(lines[-3:]) or f"exit {proc.returncode}")
    (dest / "partial").rmdir() if (dest / "partial").is_dir() else None
    (dest / "lock").unlink(missing_ok=True)
    for deb in dest.glob("*%3a*.deb"):
        deb.rename(dest / safe_name(deb.name))
    files = sorted(dest.glob("*.deb"))
    if not any(p.name.startswith("libvlc5_") for p in files):
        return files, f"libvlc5 for {release} {arch} was not downloaded"
    write_index(dest, files)
    return [*files, dest / "Packages", dest / "REQUESTED"], None


def safe_name(filename: str) -> str:
    """apt writes an epoch's ':' as '%3a'; a file: repository URL-decodes it and would not find the file."""
    return filename.replace("%3a", "+epoch+")


def write_index(dest: Path, debs: list[Path]) -> None:
    """A flat apt repository over DEST: Packages (control fields + Filename/Size/SHA256, made here on the
    laptop so the Pi runs no per-package tools), and REQUESTED, the packages first boot asks apt for."""
    import hashlib

    stanzas = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                                 check=True).stdout.rstrip("\n")
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        stanzas.append(f"{control}\nFilename: ./{deb.name}\nSize: {deb.stat().st_size}\nSHA256: {digest}\n")
    (dest / "Packages").write_text("\n".join(stanzas), encoding="utf-8")
    (dest / "REQUESTED").write_text(" ".join(DEB_PACKAGES) + "\n", encoding="utf-8")
