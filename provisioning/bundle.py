"""`speaker-provision bundle`: the offline wheel bundle a node installs from at first boot.

A pole has no reliable Internet and must never reach PyPI, so the laptop downloads binary wheels for
the Pi's platform (arm64 = 64-bit Raspberry Pi OS, armhf = 32-bit) and Python version, adds this
project's own wheel and pip itself, and writes manifest.json with a SHA-256 per file. `sdcard --bundle`
checks those hashes before it copies anything.

Each requirement is downloaded separately so one missing wheel is reported by name instead of failing
the whole bundle: for armhf, cryptography has manylinux_2_31_armv7l wheels on PyPI but its dependency
cffi has none. Fallback for armhf: add
`--extra-index-url https://www.piwheels.org/simple` (piwheels builds armv7l wheels). Debian's
python3-cryptography is not a fallback: Bookworm's 38.x lacks the X.509 verification API we need (43+).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

from node.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Same specifiers as setup.py NODE_REQUIREMENTS (a test keeps them in step); pip is added so the node
# can create its venv --without-pip (python3-venv/ensurepip is not on Raspberry Pi OS Lite).
RUNTIME_REQUIREMENTS = [
    "paho-mqtt>=2.1",
    "cryptography>=43",
    "gpiozero>=2.0",
    "pyserial>=3.5",
    "python-vlc>=3.0.18122",
    "pip",
]
# pip does not expand manylinux_2_X to older glibc versions by itself, so list the ones whose wheels
# run on Bookworm's glibc 2.36 (Trixie has 2.41, so these run there too).
PLATFORMS = {
    "arm64": [
        "manylinux2014_aarch64",
        "manylinux_2_28_aarch64",
        "manylinux_2_31_aarch64",
        "manylinux_2_34_aarch64",
        "manylinux_2_36_aarch64",
        "linux_aarch64",
    ],
    "armhf": [
        "manylinux2014_armv7l",
        "manylinux_2_28_armv7l",
        "manylinux_2_31_armv7l",
        "manylinux_2_34_armv7l",
        "manylinux_2_36_armv7l",
        "linux_armv7l",
    ],
}


def python_tag(version: str) -> str:
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] != "3":
        raise ConfigError([f"--python must look like 3.11, got {version!r}"])
    return parts[0] + parts[1]


def download_commands(
    out: Path, archs: list[str], pythons: list[str], extra_index: list[str], python: str = sys.executable
) -> list[tuple[str, list[str]]]:
    """(label, argv) for every pip call; pure, so --dry-run and tests see exactly what would run."""
    commands = []
    for arch in archs:
        for version in pythons:
            for requirement in RUNTIME_REQUIREMENTS:
                argv = [
                    python,
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "--only-binary=:all:",
                    "--implementation",
                    "cp",
                    "--python-version",
                    python_tag(version),
                    "--dest",
                    str(out),
                ]
                for platform in PLATFORMS[arch]:
                    argv += ["--platform", platform]
                for url in extra_index:
                    argv += ["--extra-index-url", url]
                commands.append((f"{requirement} [{arch}, Python {version}]", argv + [requirement]))
    commands.append(
        (
            "speaker-node (this project's node distribution; the district tools stay off the Pi)",
            [
                "env",
                "SPEAKER_DISTRIBUTION=node",  # setup.py builds one of two distributions (see its docstring)
                python,
                "-m",
                "pip",
                "wheel",
                "--disable-pip-version-check",
                "--no-deps",
                "--wheel-dir",
                str(out),
                str(PROJECT_ROOT),
            ],
        )
    )
    return commands


def pip_failure(stderr: str) -> str:
    """The line of pip's output that names what was missing, rather than its generic last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "no matching distributions available" in line and i + 1 < len(lines):
            return f"no binary wheel for this platform: {lines[i + 1]} (a dependency)"
    for needle in ("No matching distribution", "Could not find a version", "requires a different Python"):
        for line in lines:
            if needle in line:
                return line.removeprefix("ERROR: ")
    return (lines[-1] if lines else "pip failed").removeprefix("ERROR: ")


def write_manifest(out: Path, archs: list[str], pythons: list[str], missing: list[str]) -> dict:
    files = []
    for path in sorted(out.glob("*.whl")):
        files.append(
            {
                "name": path.name,
                "size": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    manifest = {
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "arch": archs,
        "python": pythons,
        "requirements": RUNTIME_REQUIREMENTS,
        "files": files,
        "missing": missing,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str]) -> int:
    prog = "speaker-provision bundle"
    parser = argparse.ArgumentParser(prog=prog, description="Build the offline wheel bundle for the Pi.")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--arch", choices=("arm64", "armhf", "both"), default="arm64")
    parser.add_argument(
        "--python",
        action="append",
        metavar="3.X",
        help="target Python (Bookworm 3.11, Trixie 3.13); repeat for both. Default 3.11",
    )
    parser.add_argument(
        "--extra-index-url",
        action="append",
        default=[],
        help="e.g. https://www.piwheels.org/simple for armhf wheels missing on PyPI",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands, run nothing")
    args = parser.parse_args(argv)
    archs = ["arm64", "armhf"] if args.arch == "both" else [args.arch]
    pythons = args.python or ["3.11"]
    try:
        commands = download_commands(args.output, archs, pythons, args.extra_index_url)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for _, command in commands:
            print(shlex.join(command))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    missing = []
    for label, command in commands:
        print(f"{prog}: {label}", file=sys.stderr)
        proc = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        if proc.returncode != 0:
            missing.append(f"{label}: {pip_failure(proc.stderr)}")
    manifest = write_manifest(args.output, archs, pythons, missing)
    print(f"{prog}: {len(manifest['files'])} wheels in {args.output}", file=sys.stderr)
    if missing:
        print(f"{prog}: MISSING (the bundle is incomplete; a node cannot install from it):", file=sys.stderr)
        for line in missing:
            print(f"  - {line}", file=sys.stderr)
        if "armhf" in archs and not args.extra_index_url:
            print(
                "  armhf wheels missing on PyPI: retry with --extra-index-url https://www.piwheels.org/simple",
                file=sys.stderr,
            )
        return 1
    return 0
