"""`speaker-provision bundle`: everything a node installs from at first boot, offline.

A pole has no reliable Internet and must never reach PyPI or a Debian mirror, so the laptop collects:

- binary wheels for the Pi's platform (arm64 = 64-bit Raspberry Pi OS, armhf = 32-bit) and Python
  version, this project's own wheel and pip itself (Raspberry Pi OS Lite has no ensurepip);
- the Debian packages for libVLC (Raspberry Pi OS Lite has none) for the release and architecture
  (provisioning/bundle_debs.py);
- manifest.json with a SHA-256 per file and what is missing. `sdcard --bundle` checks it against the
  image (architecture, Python) and refuses an incomplete bundle.

Requirements are resolved one wheel at a time (`pip download --no-deps`, dependencies read from each
wheel's metadata for the target platform), so a missing wheel is reported by its own name: on armhf,
cryptography has manylinux_2_31_armv7l wheels on PyPI but its dependency cffi has none. `--build-root
DIR` builds such wheels in a Debian root of the target architecture (provisioning/bundle_build.py;
`--make-build-root` creates it with debootstrap + qemu-user-static). Alternative: `--extra-index-url
https://www.piwheels.org/simple`. Debian's python3-cryptography is not a fallback: Bookworm's 38.x
lacks the X.509 verification API the node needs (43+).
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.parser
import hashlib
import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

from node.errors import ConfigError
from provisioning import bundle_build, bundle_debs

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:  # pip vendors packaging; the laptop always has pip
    from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NODE_DIST = "speaker-node"  # the distribution the Pi installs (only the node)
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
MACHINE = {"arm64": "aarch64", "armhf": "armv7l"}
PLATFORMS = {
    arch: [f"manylinux2014_{m}", *(f"manylinux_2_{v}_{m}" for v in (28, 31, 34, 36)), f"linux_{m}"]
    for arch, m in MACHINE.items()
}


def python_tag(version: str) -> str:
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] != "3":
        raise ConfigError([f"--python must look like 3.11, got {version!r}"])
    return parts[0] + parts[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    return canonical(filename.split("-", 1)[0])


def wheel_fits(filename: str, arch: str, python: str) -> bool:
    """Pure: can a Pi of ARCH with CPython PYTHON install this wheel file?"""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        return False
    pytags, abis, plats = parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")
    want = int(python_tag(python)[1:])
    platform_ok = "any" in plats or any(p.endswith("_" + MACHINE[arch]) for p in plats)

    def py_ok(tag: str) -> bool:
        if tag in ("py3", "py2.py3"):
            return True
        match = re.fullmatch(r"cp3(\d+)", tag)
        if not match:
            return False
        return int(match[1]) == want or ("abi3" in abis and int(match[1]) <= want)

    return platform_ok and any(py_ok(t) for t in pytags)


def target_environment(arch: str, python: str) -> dict[str, str]:
    return {"implementation_name": "cpython", "platform_python_implementation": "CPython",
            "platform_machine": MACHINE[arch], "platform_system": "Linux", "sys_platform": "linux",
            "os_name": "posix", "python_version": python, "python_full_version": python + ".0", "extra": ""}


def wheel_dependencies(wheel: Path, arch: str, python: str) -> list[str]:
    """Requires-Dist of a wheel whose markers hold on the target (extras off)."""
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode("utf-8", "replace"))
    env = target_environment(arch, python)
    deps = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or Marker(str(req.marker)).evaluate(env):
            deps.append(f"{req.name}{req.specifier}")
    return deps


def download_command(out: Path, arch: str, version: str, requirement: str, extra_index: list[str],
                     python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", python_tag(version), "--dest", str(out)]
    for platform in PLATFORMS[arch]:
        argv += ["--platform", platform]
    for url in extra_index:
        argv += ["--extra-index-url", url]
    return argv + [requirement]


def project_wheel_command(out: Path, python: str = sys.executable) -> list[str]:
    # setup.py builds one of two distributions: the node's (the only one the Pi carries) by default
    return ["env", "SPEAKER_DISTRIBUTION=node", python, "-m", "pip", "wheel", "--disable-pip-version-check",
            "--no-deps", "--wheel-dir", str(out), str(PROJECT_ROOT)]


def download_commands(out: Path, archs: list[str], pythons: list[str], extra_index: list[str],
                      python: str = sys.executable) -> list[tuple[str, list[str]]]:
    """The top-level pip calls, for --dry-run (dependencies follow from each wheel's metadata)."""
    commands = [(f"{req} [{arch}, Python {version}]", download_command(out, arch, version, req, extra_index, python))
                for arch in archs for version in pythons for req in RUNTIME_REQUIREMENTS]
    label = "speaker-node (this project's node distribution; the district tools stay off the Pi)"
    return commands + [(label, project_wheel_command(out, python))]


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


def _find_fitting(out: Path, requirement: str, arch: str, version: str) -> Path | None:
    req = Requirement(requirement)
    for path in sorted(out.glob("*.whl"), reverse=True):
        if wheel_name(path.name) == canonical(req.name) and wheel_fits(path.name, arch, version):
            if not req.specifier or req.specifier.contains(path.name.split("-")[1], prereleases=True):
                return path
    return None


def collect_wheels(out: Path, arch: str, version: str, extra_index: list[str], build_root: Path | None,
                   run=subprocess.run, seen: set[str] | None = None) -> list[str]:
    """Fetch the closure of RUNTIME_REQUIREMENTS for one (arch, Python) and add its project names to
    `seen`; returns what is missing."""
    missing, queue, done = [], [(r, None) for r in RUNTIME_REQUIREMENTS], set()
    while queue:
        requirement, parent = queue.pop(0)
        if canonical(Requirement(requirement).name) in done:
            continue
        done.add(canonical(Requirement(requirement).name))
        wheel = _find_fitting(out, requirement, arch, version)
        if wheel is None:
            proc = run(download_command(out, arch, version, requirement, extra_index),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
            wheel = _find_fitting(out, requirement, arch, version)
            if wheel is None and build_root is not None:
                print(f"speaker-provision bundle: building {requirement} for {arch} in {build_root}", file=sys.stderr)
                try:
                    wheel = bundle_build.build_wheel(build_root, requirement, out, python_tag(version))
                except ConfigError as exc:
                    missing.append(f"{requirement} [{arch}, Python {version}]: {exc}")
                    continue
            if wheel is None:
                needed = f" (needed by {parent})" if parent else ""
                missing.append(f"{requirement}{needed} [{arch}, Python {version}]: no wheel on the index "
                               f"({pip_failure(proc.stderr)}); build it with --build-root or use piwheels")
                continue
        queue += [(dep, wheel.name.split("-")[0]) for dep in wheel_dependencies(wheel, arch, version)]
    if seen is not None:
        seen |= done
    return missing


def _entry(path: Path, out: Path) -> dict:
    return {"name": str(path.relative_to(out)), "size": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def write_manifest(out: Path, archs: list[str], pythons: list[str], missing: list[str],
                   debs: dict[str, list[Path]] | None = None, closure: set[str] | None = None) -> dict:
    if closure is None:
        closure = {wheel_name(p.name) for p in out.glob("*.whl")}
    manifest = {
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "arch": archs,
        "python": pythons,
        "requirements": RUNTIME_REQUIREMENTS,
        # every project a node installs: sdcard checks each has a wheel for the card's arch and Python
        "closure": sorted(closure | {NODE_DIST}),
        "files": [_entry(path, out) for path in sorted(out.glob("*.whl"))],
        # {"bookworm-arm64": [{"name": "debs-bookworm-arm64/libvlc5_...deb", ...}]}
        "debs": {key: [_entry(p, out) for p in paths] for key, paths in (debs or {}).items()},
        "missing": missing,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str]) -> int:
    prog = "speaker-provision bundle"
    parser = argparse.ArgumentParser(prog=prog, description="Build the offline bundle for the Pi.")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--arch", choices=("arm64", "armhf", "both"), default="arm64")
    parser.add_argument("--python", action="append", metavar="3.X",
                        help="target Python (Bookworm 3.11, Trixie 3.13); repeat for both. Default 3.11")
    parser.add_argument("--extra-index-url", action="append", default=[],
                        help="e.g. https://www.piwheels.org/simple for armhf wheels missing on PyPI")
    parser.add_argument("--build-root", type=Path,
                        help="Debian root of the target arch to build wheels PyPI lacks (armhf: cffi)")
    parser.add_argument("--make-build-root", action="store_true",
                        help="create --build-root with debootstrap + qemu-user-static if it does not exist")
    parser.add_argument("--no-debs", action="store_true", help="skip the libVLC Debian packages")
    parser.add_argument("--dry-run", action="store_true", help="print the top-level commands, run nothing")
    args = parser.parse_args(argv)
    archs = ["arm64", "armhf"] if args.arch == "both" else [args.arch]
    pythons = args.python or ["3.11"]
    try:
        commands = download_commands(args.output, archs, pythons, args.extra_index_url)
        releases = {version: bundle_debs.release_for_python(version) for version in pythons}
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for _, command in commands:
            print(shlex.join(command))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    debs: dict[str, list[Path]] = {}
    closure: set[str] = set()
    try:
        if args.build_root and args.make_build_root:
            if len(pythons) != 1 or len(archs) != 1:
                raise ConfigError(["--make-build-root builds for one --arch and one --python at a time"])
            print(f"{prog}: creating build root {args.build_root} (debootstrap, a few minutes)", file=sys.stderr)
            bundle_build.make_build_root(args.build_root, releases[pythons[0]], archs[0])
        for arch in archs:
            for version in pythons:
                print(f"{prog}: wheels for {arch}, Python {version}", file=sys.stderr)
                missing += collect_wheels(args.output, arch, version, args.extra_index_url, args.build_root,
                                          seen=closure)
                if not args.no_debs:
                    release = releases[version]
                    print(f"{prog}: libVLC Debian packages for {release} {arch}", file=sys.stderr)
                    files, problem = bundle_debs.download_debs(args.output / ".work", args.output, release, arch)
                    debs[f"{release}-{arch}"] = files
                    if problem:
                        missing.append(problem)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{prog}: {problem}", file=sys.stderr)
        return 2
    print(f"{prog}: speaker-node (this project)", file=sys.stderr)
    proc = subprocess.run(project_wheel_command(args.output), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    if proc.returncode != 0:
        missing.append(f"speaker-node (this project): {pip_failure(proc.stderr)}")
    manifest = write_manifest(args.output, archs, pythons, missing, debs, closure)
    count = sum(len(v) for v in manifest["debs"].values())
    print(f"{prog}: {len(manifest['files'])} wheels and {count} Debian packages in {args.output}", file=sys.stderr)
    if missing:
        print(f"{prog}: MISSING (the bundle is incomplete; sdcard refuses it):", file=sys.stderr)
        for line in missing:
            print(f"  - {line}", file=sys.stderr)
        return 1
    return 0
