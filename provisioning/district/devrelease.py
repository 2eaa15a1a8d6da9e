"""Releases of this source tree for the demo, the update tests and the benchmark: the project copied, its
version set (and optionally broken on purpose), built into a wheel beside this machine's dependency
wheels. A district building real releases uses `speaker-provision bundle` for the Pi's platform."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ["paho-mqtt>=2.1", "cryptography>=43", "gpiozero>=2.0", "pyserial>=3.5", "python-vlc>=3.0.18122"]


def _pip(*args, timeout=600):
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True,
                   capture_output=True, timeout=timeout)


def build_version(tmp: Path, version: str, out: Path, patch=None) -> None:
    """A real wheel of this project at `version` (a copy of the source tree, optionally broken)."""
    src = tmp / f"src-{version}"
    skip = shutil.ignore_patterns(".git", ".venv", "tests", "benchmarks", "docs", "build", "mutants", "*.egg-info",
                                  "__pycache__", ".ruff_cache", ".pytest_cache", ".hypothesis")
    shutil.copytree(ROOT, src, ignore=skip)
    init = src / "node" / "__init__.py"
    text, n = re.subn(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text())
    if n != 1:
        raise RuntimeError(f"{init} has no __version__ line to set")
    init.write_text(text)
    if patch:
        patch(src)
    _pip("wheel", "--no-deps", "-w", str(out), str(src))


def crash_at_start(src: Path) -> None:
    daemon = src / "node" / "daemon.py"
    daemon.write_text(daemon.read_text() + "\n\ndef main(argv):\n    raise RuntimeError('broken release')\n")


def never_healthy(src: Path) -> None:
    # A release whose daemon never reaches the broker: every start times out its health check.
    wire = src / "node" / "wiring.py"
    text = wire.read_text()
    patched = text.replace("client_id=cfg.node.id, servers=cfg.broker.servers",
                           "client_id=cfg.node.id, servers=['127.0.0.1:9']")
    assert patched != text, "the broker construction moved: update this test's patch"
    wire.write_text(patched)



def build_wheelhouses(base: Path, versions: dict) -> dict[str, Path]:
    """{version: patch or None} -> {version: wheelhouse with the deps and that version's wheel}."""
    deps = base / "deps"
    _pip("download", "--only-binary=:all:", "-d", str(deps), *RUNTIME, "pip")
    built = {}
    for version, patch in versions.items():
        house = base / f"house-{version}"
        shutil.copytree(deps, house)
        build_version(base, version, house, patch)
        built[version] = house
    return built
