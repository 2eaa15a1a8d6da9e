"""The Pi carries only the node (STYLE.md point 13): nothing under node/ imports the district and
technician tools (provisioning/), not even lazily, and the node wheel holds no provisioning file."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRICT_PACKAGE = "provisioning"
MODULE_PATH = re.compile(rf"^{DISTRICT_PACKAGE}(\.[A-Za-z_]\w*)*$")


def district_imports(source: str, filename: str = "<source>") -> list[str]:
    """Every place in `source` that imports provisioning: import statements anywhere (module level, in a
    function, under TYPE_CHECKING) and module paths as strings (importlib.import_module, __import__, the
    sub-command tables that clidispatch imports lazily)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_PATH.match(node.value):
            names = [node.value]
        found += [f"{filename}:{node.lineno}: {name}" for name in names
                  if name == DISTRICT_PACKAGE or name.startswith(DISTRICT_PACKAGE + ".")]
    return found


def test_the_scanner_sees_lazy_and_string_imports_of_the_district_tools():
    source = ("import json\n"
              "def f():\n    from provisioning.district.box import DistrictInABox\n"
              "def g():\n    import provisioning.pki as pki\n"
              "COMMANDS = {'demo': ('provisioning.district.demo', 'help')}\n"
              "from node.trust import keys\n"
              "TEXT = 'copy it again from its provisioning bundle'\n")
    assert [hit.split(": ", 1)[1] for hit in district_imports(source)] == [
        "provisioning.district.box", "provisioning.pki", "provisioning.district.demo"]


def test_nothing_under_node_imports_the_district_tools():
    hits = []
    for path in sorted((ROOT / "node").rglob("*.py")):
        hits += district_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert hits == [], "node/ must not import provisioning (the Pi does not carry it):\n" + "\n".join(hits)


def _build_wheel(tmp_path: Path, distribution: str) -> zipfile.ZipFile:
    """Build one distribution from its own copy of the tree (setuptools' build/ would carry one
    distribution's files into the other; the worktree stays clean; no network: the venv's setuptools)."""
    src = tmp_path / f"src-{distribution}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("node", "provisioning", "systemd"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / distribution
    env = {**os.environ, "SPEAKER_DISTRIBUTION": distribution}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "--wheel-dir", str(out), str(src)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.timeout(600)
def test_node_wheel_carries_no_district_tools_and_the_tools_wheel_no_node(tmp_path):
    node = _build_wheel(tmp_path, "node")
    assert Path(node.filename).name.startswith("speaker_node-")
    names = node.namelist()
    assert "node/daemon.py" in names and "node/data/node.example.toml" in names
    assert [n for n in names if n.startswith(DISTRICT_PACKAGE + "/")] == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = node.read(entry_points).decode()
    assert "speaker-node = node.cli:main" in scripts
    assert "speaker-district" not in scripts and "speaker-provision" not in scripts

    tools = _build_wheel(tmp_path, "district-tools")
    assert Path(tools.filename).name.startswith("speaker_district_tools-")
    names = tools.namelist()
    assert "provisioning/district/demo.py" in names and "provisioning/broker/acl.template" in names
    assert [n for n in names if n.startswith("node/")] == []  # it depends on speaker-node instead
    metadata = tools.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^Requires-Dist: speaker-node==", metadata, re.M)


def test_offline_bundle_builds_the_node_distribution_only():
    from provisioning.bundle import PROJECT_ROOT, download_commands

    label, wheel = download_commands(Path("/tmp/out"), ["arm64"], ["3.11"], [])[-1]
    assert wheel[:2] == ["env", "SPEAKER_DISTRIBUTION=node"]
    assert wheel[4:6] == ["pip", "wheel"] and "--no-deps" in wheel and wheel[-1] == str(PROJECT_ROOT)
    assert "speaker-node" in label


def test_unknown_distribution_is_refused_with_the_choices(tmp_path):
    env = {**os.environ, "SPEAKER_DISTRIBUTION": "district"}
    proc = subprocess.run([sys.executable, str(ROOT / "setup.py"), "--name"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "SPEAKER_DISTRIBUTION must be one of node, district-tools, not 'district'" in proc.stderr
