"""Wheels PyPI does not have for the Pi (armhf: cffi), built inside a root of the target architecture.

A Debian root of the target release and architecture (debootstrap --arch armhf, run through
qemu-user-static's binfmt handler) has the same Python and glibc as Raspberry Pi OS, so a wheel
built there installs on the card. `make_build_root` creates one; `build_wheel` downloads the sdist on
the laptop with its build requirements (the root needs no network) and runs `pip wheel --no-deps
--no-index` in it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from node.errors import ConfigError

BUILD_PACKAGES = ["python3", "python3-dev", "python3-pip", "python3-setuptools", "python3-wheel", "gcc",
                  "libc6-dev", "libffi-dev", "pkg-config"]
DEBIAN_ARCH = {"arm64": "arm64", "armhf": "armhf"}
QEMU = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}


def binfmt_ready(arch: str) -> bool:
    """True when the kernel runs ARCH binaries through qemu-user-static (needed to chroot into a root)."""
    entry = Path("/proc/sys/fs/binfmt_misc") / QEMU[arch]
    try:
        return entry.read_text().startswith("enabled")
    except OSError:
        return False


def debootstrap_command(root: Path, release: str, arch: str, packages: list[str],
                        mirror: str = "http://deb.debian.org/debian") -> list[str]:
    return ["debootstrap", f"--arch={DEBIAN_ARCH[arch]}", "--variant=minbase",
            f"--include={','.join(packages)}", release, str(root), mirror]


def make_build_root(root: Path, release: str, arch: str) -> None:
    if (root / "usr" / "bin" / "gcc").exists() and (root / "usr" / "include" / "ffi.h").exists():
        return
    if shutil.which("debootstrap") is None:
        raise ConfigError(["debootstrap is not installed (apt install debootstrap qemu-user-static)"])
    if not binfmt_ready(arch):
        raise ConfigError([f"{QEMU[arch]} is not registered with binfmt_misc "
                           "(apt install qemu-user-static binfmt-support)"])
    proc = subprocess.run(debootstrap_command(root, release, arch, BUILD_PACKAGES), capture_output=True,
                          text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ConfigError([f"debootstrap {release} {arch} into {root} failed: {' / '.join(tail)}"])


def build_requirements(sdist: Path) -> list[str]:
    """[build-system] requires of an sdist's pyproject.toml (setuptools only when it has none)."""
    import tarfile
    import tomllib

    with tarfile.open(sdist) as archive:
        member = next((m for m in archive.getmembers() if m.name.count("/") == 1
                       and m.name.endswith("/pyproject.toml")), None)
        if member is None:
            return ["setuptools", "wheel"]
        data = tomllib.loads(archive.extractfile(member).read().decode("utf-8"))
    return list(data.get("build-system", {}).get("requires", ["setuptools", "wheel"]))


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() and "See above" not in ln]
    return " / ".join(errors[-3:]) or (lines[-1] if lines else "?")


def build_wheel(root: Path, requirement: str, out: Path, python_tag: str) -> Path:
    """Build REQUIREMENT (e.g. 'cffi>=2.0.0') in ROOT; returns the wheel copied into OUT.

    Everything is fetched on the laptop: the sdist and its build requirements (pure wheels such as
    setuptools: Debian's own setuptools can be too old for a current pyproject.toml). In the root, pip
    builds in an isolated environment from those local files only (--no-index)."""
    src = root / "tmp" / "speaker-build"
    shutil.rmtree(src, ignore_errors=True)
    (src / "dist").mkdir(parents=True)
    (src / "deps").mkdir()
    python = shutil.which("python3") or "python3"
    download = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--disable-pip-version-check", "--dest", str(src), requirement]
    proc = subprocess.run(download, capture_output=True, text=True, check=False, timeout=600)
    sdists = [p for p in src.iterdir() if p.name.endswith((".tar.gz", ".zip"))]
    if proc.returncode != 0 or not sdists:
        raise ConfigError([f"no source distribution for {requirement} on the index: {_last_error(proc.stderr)}"])
    needs = build_requirements(sdists[0])
    proc = subprocess.run([python, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
                           "--dest", str(src / "deps"), *needs], capture_output=True, text=True, check=False,
                          timeout=600)
    if proc.returncode != 0:
        raise ConfigError([f"build requirements of {requirement} ({', '.join(needs)}): {_last_error(proc.stderr)}"])
    inside = f"/tmp/speaker-build/{sdists[0].name}"
    build = ["chroot", str(root), "/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-index",
             "--find-links", "/tmp/speaker-build/deps", "--disable-pip-version-check",
             "--wheel-dir", "/tmp/speaker-build/dist", inside]
    proc = subprocess.run(build, capture_output=True, text=True, check=False, timeout=3600,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"})
    wheels = list((src / "dist").glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ConfigError([f"building {requirement} in {root} failed: {_last_error(proc.stdout + proc.stderr)}"])
    if f"cp{python_tag}" not in wheels[0].name and "py3" not in wheels[0].name:
        raise ConfigError([f"{wheels[0].name} was built for another Python than {python_tag} "
                           f"(the build root's release must match the card's)"])
    target = out / wheels[0].name
    shutil.copyfile(wheels[0], target)
    shutil.rmtree(src, ignore_errors=True)
    return target
