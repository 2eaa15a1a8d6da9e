"""The demo's software-update step (`speaker-district demo --once --update`): one node runs from a release
tree as first boot lays it out, the district signs a new release with its two release keys and the node
updates itself and commits; then a broken release (it crashes at start) rolls back by itself.

It builds real wheels of this source tree (about half a minute), so it is a flag, not part of the
30-second default scenario.
"""

from __future__ import annotations

import sys
from pathlib import Path

from node import __version__ as OLD
from node.update.tree import ReleaseTree
from provisioning.district.devrelease import build_wheelhouses, crash_at_start
from provisioning.district.release import main as release_main

NEW = ".".join(OLD.split(".")[:-1] + [str(int(OLD.split(".")[-1]) + 1)])
BROKEN = NEW + ".1"


class UpdatableNode:
    """Lays out one simulated node's releases/OLD/venv and makes the box start it from `current`."""

    def __init__(self, node, work: Path):
        self.node, self.work = node, work
        self.tree = ReleaseTree(node.node_dir / "opt")
        self.wheels: dict[str, Path] = {}

    def prepare(self, say) -> None:
        say(f"building releases {OLD}, {NEW} and a broken {BROKEN} of this source tree (real wheels)")
        self.wheels = build_wheelhouses(self.work / "wheels", {OLD: None, NEW: None, BROKEN: crash_at_start})
        self.tree.install(OLD, self.wheels[OLD], "speaker-node")
        self.tree.point("current", OLD)
        self.tree.point("committed", OLD)
        self.node.argv = [str(self.tree.executable("current")), "run", "--config", str(self.node.config)]
        self.node.env_drop = ("PYTHONPATH", "VIRTUAL_ENV")
        # Short health deadline so a bad release is seen within the demo.
        with open(self.node.config, "a", encoding="utf-8") as f:
            f.write("\n[update]\nhealth_deadline = 20\nquiet_before_slot = 0\n")

    def release(self, workspace: Path, content_root: Path, version: str) -> Path:
        out = content_root / "releases" / version
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        if release_main([str(workspace), str(self.wheels[version]), "--version", version, "-o", str(out),
                         "--arch", "x86_64", "--arch", "arm64", "--arch", "armhf", "--python", python]) != 0:
            raise RuntimeError(f"speaker-district release {version} failed")
        return out


def software_update(scenario, updatable: UpdatableNode) -> bool:
    box, tl, sim = scenario.box, scenario.tl, scenario.sim
    node_id = updatable.node.node_id
    keys = [sim.ws.key("release-a"), sim.ws.key("release-b")]

    def send(version: str) -> None:
        rel = updatable.release(box.workspace, box.content.root, version)
        body = {"release": (rel / "release.json").read_text(),
                "files_url": box.content.url(f"releases/{version}/")}
        sim.send("update", body, [node_id], keys=keys)
        tl.say(f"district signs release {version} with release-a + release-b and sends it to {node_id}")

    def event(kind, timeout):
        return scenario._event(node_id, lambda o: o.get("type") == kind, timeout)

    send(NEW)
    committed = event("update_committed", 180)
    ok = scenario.check(f"{node_id} installed {NEW} beside {OLD}, restarted into it and committed it",
                        bool(committed) and updatable.tree.committed() == NEW)
    send(BROKEN)
    rolled = event("update_rolled_back", 240)
    ok &= scenario.check(f"{node_id} rolled the crashing {BROKEN} back to {NEW} by itself",
                         bool(rolled) and updatable.tree.current() == NEW)
    if rolled:
        tl.say(f"  reason: {(rolled[1].get('data') or {}).get('reason')}")
    return ok

