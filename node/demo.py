"""`speaker-node demo [--once] [--dir DIR] [--nodes N]`: a whole district-in-a-box on this machine.

It creates a district (keys, signed trust document, TLS CA), provisions simulated nodes the way a
technician would, starts a real Mosquitto and the nodes (`speaker-node run --simulate`), then plays
a scenario and prints a readable timeline of what crosses the broker. `--once` runs the fixed scenario
and exits 0 only if every step succeeded, leaving nothing running.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

COMMUNES = [("27787", "760", "75", 1), ("27787", "760", "75", 2), ("27790", "760", "75", 1)]


class Timeline:
    """Subscribes as the district and prints every message the nodes publish, with elapsed time."""

    def __init__(self, workspace: Path, broker_address: str, out=sys.stdout):
        from provisioning.district.localbroker import client_tls

        self.t0 = time.monotonic()
        self.out = out
        self.messages: "queue.Queue[tuple[str, dict]]" = queue.Queue()
        self.seen: list[tuple[float, str, dict]] = []
        host, _, port = broker_address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-timeline", protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_tls(workspace, "district"))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("spk/node/+/status", 1), ("spk/node/+/events", 1), ("spk/node/+/delta", 0)])
        self.client.on_message = self._on_message
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", file=self.out, flush=True)

    def _on_message(self, client, userdata, msg):
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            obj = {"raw": msg.payload[:80].decode(errors="replace")}
        node = msg.topic.split("/")[2]
        kind = msg.topic.rsplit("/", 1)[-1]
        self.seen.append((time.monotonic(), msg.topic, obj))
        self.messages.put((msg.topic, obj))
        self.say(f"{node:>9} {kind:<6} {describe(kind, obj)}")

    def wait_for(self, predicate, timeout: float) -> tuple[str, dict] | None:
        for _, topic, obj in list(self.seen):
            if predicate(topic, obj):
                return topic, obj
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, obj = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if predicate(topic, obj):
                return topic, obj
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def describe(kind: str, obj: dict) -> str:
    if kind == "status":
        if obj.get("online") is False:
            return f"OFFLINE ({obj.get('reason')}) birth={obj.get('birth')}"
        net = obj.get("net") or {}
        signal = f" {net.get('op')} {net.get('act')} rssi={net.get('rssi')}dBm" if net.get("op") else ""
        alarms = f" alarms={obj.get('alarms')}" if obj.get("alarms") else ""
        return f"online birth={obj.get('birth')} seq={obj.get('seq')}{signal}{alarms}"
    if kind == "events":
        if obj.get("kind") == "play":
            return (f"PLAY RECORD {obj.get('content_id')} level={obj.get('level')} source={obj.get('source')} "
                    f"result={obj.get('result')} seconds={obj.get('seconds')}")
        data = obj.get("data") or {}
        return f"EVENT {obj.get('type')} " + " ".join(f"{k}={v}" for k, v in data.items() if v is not None)
    return "delta " + json.dumps({k: v for k, v in obj.items() if k not in ("v", "node", "seq", "ts")},
                                 separators=(",", ":"))


class Scenario:
    """Steps run in order; each returns True/False; the demo's exit status is whether all passed."""

    def __init__(self, box, timeline: Timeline):
        self.box, self.tl = box, timeline
        self.results: list[tuple[str, bool]] = []

    def check(self, name: str, ok: bool) -> bool:
        self.results.append((name, ok))
        self.tl.say(f"{'PASS' if ok else 'FAIL'}  {name}")
        return ok

    def all_online(self) -> bool:
        ok = True
        for node_id in self.box.nodes:
            hit = self.tl.wait_for(lambda t, o, n=node_id: t == f"spk/node/{n}/status" and o.get("online") is True,
                                   timeout=20)
            ok &= self.check(f"{node_id} connected over mutual TLS and published its retained status", bool(hit))
        return ok

    def run(self) -> bool:
        steps = [self.all_online]
        for step in steps:
            if not step():
                return False
        return True


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speaker-node demo", description=__doc__.splitlines()[0])
    p.add_argument("--once", action="store_true", help="run the fixed scenario, exit 0 if it succeeded")
    p.add_argument("--dir", help="where to put the district, broker, node state and output WAVs "
                                 "(default: a new temporary directory, kept for inspection)")
    p.add_argument("--nodes", type=int, default=2, choices=range(1, len(COMMUNES) + 1),
                   help="number of simulated nodes")
    args = p.parse_args(argv)

    from provisioning.district.box import DistrictInABox

    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="speaker-demo-"))
    box = DistrictInABox(directory)
    print(f"speaker-node demo: district-in-a-box in {directory}", flush=True)
    timeline = None
    ok = False
    try:
        box.create()
        for commune, district, province, cluster in COMMUNES[: args.nodes]:
            node = box.add_node(commune, district, province, cluster)
            print(f"  provisioned node {node.node_id} (groups {', '.join(node.groups)})")
        broker = box.start_broker()
        print(f"  Mosquitto (mutual TLS, per-node ACL) on {broker.address}")
        timeline = Timeline(box.workspace, broker.address)
        box.start_nodes()
        scenario = Scenario(box, timeline)
        ok = scenario.run()
        if not args.once and ok:
            timeline.say("demo running; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        codes = box.stop()
        if timeline:
            time.sleep(0.3)  # let the last offline statuses print
            timeline.close()
        clean = all(code == 0 for code in codes.values())
        if not clean:
            print(f"nodes did not stop cleanly: {codes}", file=sys.stderr)
        ok = ok and clean
    passed = sum(1 for _, good in scenario.results if good) if timeline else 0
    print(f"\ndemo {'succeeded' if ok else 'FAILED'}: {passed} checks passed; files in {directory}")
    return 0 if ok else 1
