"""The offline wheel bundle: exact pip commands (fast, --dry-run) and one real arm64 download (slow)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest

from provisioning.bundle import RUNTIME_REQUIREMENTS, main

ROOT = Path(__file__).resolve().parent.parent


def dry_run(capsys, *args) -> list[list[str]]:
    assert main(["-o", "/tmp/bundle-out", "--dry-run", *args]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def test_dry_run_downloads_binary_wheels_for_the_pi_platform_only(capsys):
    commands = dry_run(capsys, "--arch", "arm64")
    downloads = [c for c in commands if "download" in c]
    assert len(downloads) == len(RUNTIME_REQUIREMENTS)
    for command in downloads:
        assert "--only-binary=:all:" in command
        assert command[command.index("--implementation") + 1] == "cp"
        assert command[command.index("--python-version") + 1] == "311"
        platforms = [command[i + 1] for i, a in enumerate(command) if a == "--platform"]
        assert "manylinux2014_aarch64" in platforms and all("aarch64" in p for p in platforms)
        assert "--index-url" not in command
    assert {c[-1] for c in downloads} == set(RUNTIME_REQUIREMENTS)
    wheel = commands[-1]
    assert wheel[4:6] == ["pip", "wheel"] and "--no-deps" in wheel and wheel[-1] == str(ROOT)


def test_both_arches_and_two_pythons_for_bookworm_and_trixie(capsys):
    commands = dry_run(
        capsys,
        "--arch",
        "both",
        "--python",
        "3.11",
        "--python",
        "3.13",
        "--extra-index-url",
        "https://www.piwheels.org/simple",
    )
    downloads = [c for c in commands if "download" in c]
    assert len(downloads) == 2 * 2 * len(RUNTIME_REQUIREMENTS)
    assert {c[c.index("--python-version") + 1] for c in downloads} == {"311", "313"}
    armhf = [c for c in downloads if "linux_armv7l" in c]
    assert len(armhf) == 2 * len(RUNTIME_REQUIREMENTS)
    assert all("https://www.piwheels.org/simple" in c for c in downloads)


def test_bad_python_version_is_refused(capsys):
    assert main(["-o", "/tmp/x", "--dry-run", "--python", "311"]) == 2
    assert "3.11" in capsys.readouterr().err


def test_runtime_requirements_match_setup_py():
    setup = (ROOT / "setup.py").read_text()
    block = setup[setup.index("NODE_REQUIREMENTS = [") : setup.index("]", setup.index("NODE_REQUIREMENTS = ["))]
    assert set(re.findall(r'"([^"]+)"', block)) == set(RUNTIME_REQUIREMENTS) - {"pip"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_arm64_bundle_from_pypi(tmp_path):
    out = tmp_path / "bundle"
    assert main(["-o", str(out), "--arch", "arm64", "--python", "3.11"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    names = [f["name"] for f in manifest["files"]]
    assert manifest["missing"] == []
    for project in (
        "paho_mqtt",
        "cryptography",
        "gpiozero",
        "pyserial",
        "python_vlc",
        "pip",
        "speaker_node",
        "cffi",
        "colorzero",
    ):
        assert any(n.lower().startswith(project) for n in names), project
    assert all(not n.endswith("x86_64.whl") for n in names)
    assert not [n for n in names if n.lower().startswith(("speaker_district_tools", "segno"))]  # not on the Pi
    crypto = next(n for n in names if n.startswith("cryptography"))
    assert "aarch64" in crypto
    for entry in manifest["files"]:
        assert hashlib.sha256((out / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]


def test_missing_dependency_wheel_is_named_in_the_report():
    from provisioning.bundle import pip_failure

    stderr = (
        "The conflict is caused by:\n    cryptography 50.0.2 depends on cffi>=2.0.0\n\n"
        "Additionally, some packages in these conflicts have no matching distributions available for "
        "your environment:\n    cffi\n\nERROR: ResolutionImpossible: for help visit https://pip.pypa.io\n"
    )
    assert pip_failure(stderr) == "no binary wheel for this platform: cffi (a dependency)"
    assert (
        pip_failure("ERROR: No matching distribution found for foo\n")
        == "No matching distribution found for foo"
    )
