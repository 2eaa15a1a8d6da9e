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


# --- resolving the closure one wheel at a time, naming what is missing ---------------------------------


def make_wheel(folder: Path, filename: str, requires: list[str]) -> Path:
    import zipfile

    name, version = filename.split("-")[:2]
    path = folder / filename
    with zipfile.ZipFile(path, "w") as zf:
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
            f"Requires-Dist: {r}\n" for r in requires)
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_wheel_fits_the_card_by_architecture_and_python():
    from provisioning.bundle import wheel_fits

    assert wheel_fits("cryptography-44.0.0-cp39-abi3-manylinux_2_31_armv7l.whl", "armhf", "3.11")
    assert not wheel_fits("cryptography-44.0.0-cp39-abi3-manylinux_2_31_armv7l.whl", "arm64", "3.11")
    assert wheel_fits("cffi-1.17.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", "arm64", "3.11")
    assert not wheel_fits("cffi-1.17.1-cp311-cp311-manylinux2014_aarch64.whl", "arm64", "3.13")
    assert not wheel_fits("cryptography-44.0.0-cp314-abi3-manylinux_2_31_aarch64.whl", "arm64", "3.13")
    assert wheel_fits("pyserial-3.5-py2.py3-none-any.whl", "armhf", "3.13")


def test_dependencies_are_read_for_the_target_platform(tmp_path):
    from provisioning.bundle import wheel_dependencies

    wheel = make_wheel(tmp_path, "cryptography-44.0.0-cp39-abi3-manylinux_2_31_armv7l.whl", [
        "cffi>=1.12; platform_python_implementation != 'PyPy'",
        "bcrypt>=3.1.5; extra == 'ssh'",
        "colorama; sys_platform == 'win32'",
        "typing-extensions>=4; python_version < '3.8'",
    ])
    assert wheel_dependencies(wheel, "armhf", "3.11") == ["cffi>=1.12"]


def fake_index(tmp_path, available: dict[str, tuple[str, list[str]]]):
    """A stand-in for `pip download --no-deps`: writes the wheel when the index 'has' it."""
    import subprocess as sp

    def run(argv, **kw):
        name = argv[-1].split(">")[0].split("=")[0]
        dest = Path(argv[argv.index("--dest") + 1])
        if name in available:
            filename, requires = available[name]
            make_wheel(dest, filename, requires)
            return sp.CompletedProcess(argv, 0, "", "")
        return sp.CompletedProcess(argv, 1, "", f"ERROR: No matching distribution found for {argv[-1]}\n")

    return run


def test_missing_armhf_cffi_is_named_with_what_needs_it(tmp_path):
    from provisioning.bundle import collect_wheels

    available = {
        "paho-mqtt": ("paho_mqtt-2.1.0-py3-none-any.whl", []),
        "cryptography": ("cryptography-44.0.0-cp39-abi3-manylinux_2_31_armv7l.whl",
                         ["cffi>=1.12; platform_python_implementation != 'PyPy'"]),
        "gpiozero": ("gpiozero-2.0.1-py3-none-any.whl", ["colorzero"]),
        "colorzero": ("colorzero-2.0-py2.py3-none-any.whl", []),
        "pyserial": ("pyserial-3.5-py2.py3-none-any.whl", []),
        "python-vlc": ("python_vlc-3.0.21203-py3-none-any.whl", []),
        "pip": ("pip-24.0-py3-none-any.whl", []),
    }
    seen: set[str] = set()
    missing = collect_wheels(tmp_path, "armhf", "3.11", [], None, run=fake_index(tmp_path, available), seen=seen)
    assert len(missing) == 1
    assert missing[0].startswith("cffi>=1.12 (needed by cryptography) [armhf, Python 3.11]: no wheel on the index")
    assert "--build-root" in missing[0] and "piwheels" in missing[0]
    assert {"cffi", "colorzero", "cryptography"} <= seen


def test_libvlc_packages_come_from_a_private_apt_configuration(tmp_path):
    from provisioning.bundle_debs import DEB_PACKAGES, AptRoot, apt_commands, release_for_python

    apt = AptRoot(tmp_path / "apt", "bookworm", "armhf")
    conf = apt.prepare().read_text()
    assert 'APT::Architecture "armhf"' in conf and f'Dir::State::status "{tmp_path}/apt/status"' in conf
    assert (tmp_path / "apt" / "status").read_text() == ""  # empty: the closure is complete
    assert "/etc/apt" not in conf
    assert "[arch=armhf" in apt.sources() and " bookworm main" in apt.sources()
    download = apt_commands(apt, tmp_path / "out")[1]
    assert download[1] == f"APT_CONFIG={tmp_path}/apt/apt.conf" and download[-2:] == DEB_PACKAGES
    assert "--download-only" in download
    assert release_for_python("3.13") == "trixie"
