"""Signed software updates with real parts: two real versions of this package built as wheels, a real
offline pip install into releases/VERSION, the real daemon re-executing into it through the guard, and
broken releases (crash at start, never healthy) that roll back by themselves.

The releases are served by the district's HTTPS content server (mutual TLS, district CA) and announced
with `speaker-district release` + a signed `update` command, as a district would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import district_probe, write_node_config

from node import __version__ as OLD
from node.update.tree import ReleaseTree
from provisioning.district.content_server import ContentServer
from provisioning.district.devrelease import build_wheelhouses, crash_at_start, never_healthy
from provisioning.district.release import main as release_main
from provisioning.district.simulator import DistrictSimulator

pytestmark = pytest.mark.slow   # four real wheels and three real pip installs: ~80 s

NODE = "27787-02"
NEW = ".".join(OLD.split(".")[:-1] + [str(int(OLD.split(".")[-1]) + 1)])   # 0.1.0 -> 0.1.1
CRASHING = NEW + ".1"
UNHEALTHY = NEW + ".2"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Dependency wheels for this machine plus speaker-node at OLD, NEW and two broken versions."""
    return build_wheelhouses(tmp_path_factory.mktemp("wheels"),
                             {OLD: None, NEW: None, CRASHING: crash_at_start, UNHEALTHY: never_healthy})


def _release(district_ws, wheelhouse: Path, version: str, out: Path) -> Path:
    assert release_main([str(district_ws), str(wheelhouse), "--version", version, "-o", str(out),
                         "--arch", "x86_64", "--arch", "arm64", "--python",
                         f"{sys.version_info.major}.{sys.version_info.minor}"]) == 0
    return out


@pytest.fixture
def installed_node(wheels, tmp_path, district_ws, broker):
    """A node laid out as first boot makes it: releases/OLD/venv with current and committed links."""
    tree = ReleaseTree(tmp_path / "opt")
    tree.install(OLD, wheels[OLD], "speaker-node")
    tree.point("current", OLD)
    tree.point("committed", OLD)
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address],
                            extra="[update]\nhealth_deadline = 15\nquiet_before_slot = 0\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = open(tmp_path / "node.log", "ab")
    proc = subprocess.Popen([str(tree.executable("current")), "run", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    yield tree, proc, tmp_path
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    log.close()


def _events(watcher, kind, timeout):
    return watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/events" and o and o.get("type") == kind,
                            timeout=timeout)[1]


def _status_version(watcher, version, timeout):
    """The newest retained status from `version` (one that already arrived counts)."""
    return watcher.find(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online")
                        and o.get("ver") == version, timeout=timeout)[1]


@pytest.fixture
def district(district_ws, broker, tmp_path):
    """The district's side of an update: its content server, a signing simulator, a watcher."""
    content = ContentServer(district_ws, tmp_path / "served").start()
    sim = DistrictSimulator(district_ws, broker.address)
    watcher = district_probe(broker, district_ws, client_id=f"upd-{os.getpid()}-{time.monotonic_ns()}")
    yield content, sim, watcher
    watcher.close()
    sim.close()
    content.stop()


def _send_update(district_ws, district, wheels, version: str, tmp_path: Path) -> dict:
    """`speaker-district release` of `version`, served, and a signed update command to NODE."""
    content, sim, _ = district
    rel = _release(district_ws, wheels[version], version, tmp_path / "served" / version)
    body = {"release": (rel / "release.json").read_text(), "files_url": content.url(version + "/")}
    sim.send("update", body, [NODE], keys=[sim.ws.key("release-a"), sim.ws.key("release-b")])
    return body


def _sw_delta(watcher, timeout, **expected):
    return watcher.find(lambda t, o: t == f"spk/node/{NODE}/delta" and o and all(
        (o.get("sw") or {}).get(k) == v for k, v in expected.items()), timeout=timeout)[1]


def test_update_installs_beside_commits_when_healthy_and_a_crashing_release_rolls_back(
        installed_node, wheels, district_ws, district, tmp_path):
    tree, proc, _ = installed_node
    _, sim, watcher = district
    _status_version(watcher, OLD, 60)
    # 1. A healthy release: downloaded, installed beside, switched, re-executed, committed.
    _send_update(district_ws, district, wheels, NEW, tmp_path)
    assert _events(watcher, "update_started", 30)["data"]["version"] == NEW
    assert _events(watcher, "update_installed", 180)["data"]["version"] == NEW
    committed = _events(watcher, "update_committed", 120)
    assert committed["data"] == {"version": NEW, "previous": OLD, "reason": None}
    status = _status_version(watcher, NEW, 30)
    assert status["sw"]["prev"] == OLD and status["sw"]["state"] == "trial"
    _sw_delta(watcher, 30, state="idle", result="committed")
    assert (tree.current(), tree.committed()) == (NEW, NEW)
    assert tree.is_complete(OLD) and tree.is_complete(NEW)   # the previous one is kept

    # 2. A release that crashes at every start: the guard (the committed NEW code) rolls it back.
    body = _send_update(district_ws, district, wheels, CRASHING, tmp_path)
    rolled = _events(watcher, "update_rolled_back", 300)
    assert rolled["data"]["version"] == CRASHING and rolled["data"]["previous"] == NEW
    assert "without passing its health check" in rolled["data"]["reason"]
    _status_version(watcher, NEW, 30)
    assert (tree.current(), tree.committed()) == (NEW, NEW)

    # 3. The same broken release again: refused at once, the node remembers it failed here.
    sim.send("update", body, [NODE], keys=[sim.ws.key("release-a"), sim.ws.key("release-b")])
    refused = _events(watcher, "update_refused", 30)
    assert refused["data"]["reason"] == "known_bad"
    assert proc.poll() is None


def test_release_that_never_passes_its_health_check_rolls_back_after_the_deadline(
        installed_node, wheels, district_ws, district, tmp_path):
    tree, proc, _ = installed_node
    watcher = district[2]
    _status_version(watcher, OLD, 60)
    _send_update(district_ws, district, wheels, UNHEALTHY, tmp_path)
    rolled = _events(watcher, "update_rolled_back", 240)
    assert rolled["data"]["version"] == UNHEALTHY and rolled["data"]["previous"] == OLD
    assert "broker_connected" in rolled["data"]["reason"]
    _status_version(watcher, OLD, 30)
    assert (tree.current(), tree.committed()) == (OLD, OLD)


def _supervised(tree, cfg: Path, state: Path, log, env) -> subprocess.Popen:
    """What systemd does on a node: the committed version's guard before each start of `current`."""
    return subprocess.Popen([str(tree.executable("committed")), "update-guard", "--root", str(tree.root),
                             "--state", str(state), "--supervise", "--trial-deadline", "60", "--", "run",
                             "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


@pytest.mark.parametrize("cut_in", ["pending", "downloading", "installing", "switching", "trial", "committing"])
def test_power_cut_in_every_update_state_ends_committed_with_one_install(
        cut_in, wheels, tmp_path, district_ws, broker, district):
    """kill -9 right after the record entering each state is on disk; restart as systemd would."""
    tree = ReleaseTree(tmp_path / "opt")
    tree.install(OLD, wheels[OLD], "speaker-node")
    tree.point("current", OLD)
    tree.point("committed", OLD)
    state_dir = tmp_path / "state"
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], state_dir=state_dir,
                            extra="[update]\nhealth_deadline = 30\nquiet_before_slot = 0\n")
    marker = tmp_path / "killed"
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = open(tmp_path / "node.log", "ab")
    watcher = district[2]
    proc = _supervised(tree, cfg, state_dir / "update.json", log,
                       {**base_env, "SPEAKER_FAULT_KILL_AT": f"update.{cut_in}:after",
                        "SPEAKER_FAULT_MARKER": str(marker)})  # once: the guard restarts with this env
    try:
        _status_version(watcher, OLD, 60)
        _send_update(district_ws, district, wheels, NEW, tmp_path)
        deadline = time.monotonic() + 240
        while not (tree.committed() == NEW and tree.current() == NEW):
            assert time.monotonic() < deadline, (tree.current(), tree.committed(), cut_in)
            if proc.poll() is not None:        # the whole unit died with the cut: systemd starts it again
                assert marker.exists(), "the daemon exited without the injected power cut"
                proc = _supervised(tree, cfg, state_dir / "update.json", log, base_env)
            time.sleep(0.2)
        assert marker.exists(), f"the cut in {cut_in} never happened"
        committed = _events(watcher, "update_committed", 60)
        assert committed["data"]["version"] == NEW
        installs = (tmp_path / "node.log").read_text(errors="replace").count("healthy (")
        assert installs == 1
        assert tree.is_complete(NEW) and tree.is_complete(OLD)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
