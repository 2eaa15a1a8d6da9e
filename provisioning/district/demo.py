"""`speaker-district demo [--once] [--dir DIR] [--nodes N]`: a whole district-in-a-box on this machine.

It creates a district (keys, signed trust document, TLS CA), provisions simulated nodes the way a
technician would, starts a real Mosquitto and the nodes (`speaker-node run --simulate`), then plays
a scenario and prints a readable timeline of what crosses the broker. `--once` runs the fixed scenario
and exits 0 only if every step succeeded, leaving nothing running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from node.topics import mqtt_client_id

COMMUNES = [("27787", "760", "75", 1), ("27787", "760", "75", 2), ("27790", "760", "75", 1)]
SCENARIO_BUDGET_S = 75.0   # every wait ends by then: a failing demo exits non-zero within 90 s


class Timeline:
    """Subscribes as the district and prints every message the nodes publish, with elapsed time."""

    def __init__(self, workspace: Path, broker_address: str, out=sys.stdout):
        from provisioning.district.localbroker import client_tls

        self.t0 = time.monotonic()
        self.deadline = self.t0 + SCENARIO_BUDGET_S
        self.out = out
        self._print_lock = threading.Lock()  # paho's thread and the scenario both print
        self.messages: "queue.Queue[tuple[str, dict]]" = queue.Queue()
        self.seen: list[tuple[float, str, dict]] = []
        host, _, port = broker_address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=mqtt_client_id("district", "demo-timeline"), protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_tls(workspace, "district"))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("spk/node/+/status", 1), ("spk/node/+/events", 1), ("spk/node/+/delta", 0)])
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(15):  # nothing the nodes say may be missed: wait for the SUBACK
            raise RuntimeError(f"the district could not subscribe on {broker_address}")

    def say(self, text: str) -> None:
        with self._print_lock:
            print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", file=self.out, flush=True)

    def _on_message(self, client, userdata, msg):
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            obj = {"raw": msg.payload[:80].decode(errors="replace")}
        node = msg.topic.split("/")[2]
        kind = msg.topic.rsplit("/", 1)[-1]
        self.seen.append((time.time(), msg.topic, obj))
        self.messages.put((msg.topic, obj))
        self.say(f"{node:>9} {kind:<6} {describe(kind, obj)}")

    def wait_for(self, predicate, timeout: float) -> tuple[str, dict] | None:
        for _, topic, obj in list(self.seen):
            if predicate(topic, obj):
                return topic, obj
        deadline = min(time.monotonic() + timeout, self.deadline)
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

    def __init__(self, box, timeline: Timeline, sim):
        self.box, self.tl, self.sim = box, timeline, sim
        self.results: list[tuple[str, bool]] = []
        self.node_ids = list(box.nodes)
        self.first = self.node_ids[0]
        self.media = box.dir / "media"
        self.media.mkdir(exist_ok=True)

    def check(self, name: str, ok: bool) -> bool:
        self.results.append((name, ok))
        self.tl.say(f"{'PASS' if ok else 'FAIL'}  {name}")
        return ok

    def _event(self, node: str, pred, timeout: float = 30):
        return self.tl.wait_for(lambda t, o: t == f"spk/node/{node}/events" and pred(o), timeout)

    def _record(self, node: str, content_id: str, result: str | None = None, timeout: float = 60):
        return self._event(node, lambda o: o.get("kind") == "play" and o.get("content_id") == content_id
                           and (result is None or o.get("result") == result), timeout)

    # --- steps -----------------------------------------------------------------------------------
    def all_online(self) -> bool:
        ok = True
        for node_id in self.node_ids:
            hit = self.tl.wait_for(lambda t, o, n=node_id: t == f"spk/node/{n}/status" and o.get("online") is True,
                                   timeout=20)
            ok &= self.check(f"{node_id} connected over mutual TLS and published its retained status", bool(hit))
        for node_id in self.node_ids:
            # No NTP here (nor on a pole): the node's clock is trusted because the district signed an
            # answer to the node's own nonce (docs/protocol.md §7a).
            hit = self.tl.wait_for(lambda t, o, n=node_id: t in (f"spk/node/{n}/status", f"spk/node/{n}/delta")
                                   and (o.get("clk") or {}).get("ok") is True, timeout=15)
            ok &= self.check(f"{node_id} trusts its clock: signed time from the district "
                             f"(source {(hit[1].get('clk') or {}).get('src') if hit else 'none'})", bool(hit))
        return ok

    def signed_bulletin(self) -> bool:
        audio = make_speech(self.media / "bulletin.wav",
                            "Thông báo của Ủy ban nhân dân xã. Lịch tiêm chủng mở rộng vào sáng thứ bảy.")
        url = self.box.content.publish(audio)
        body = self.sim.play_body(audio, url, level="priority", content_id="bulletin-tiem-chung")
        cid = self.sim.send("play", body, ["c27787"])
        self.tl.say(f"district signed bulletin {body['content_id']} (sha256 {body['sha256'][:12]}…, "
                    f"{body['duration']:.1f} s) and sent command {cid} to group c27787")
        ok = True
        for node in self.node_ids:
            if self.box.nodes[node].groups[0] != "c27787":
                continue
            rec = self._record(node, body["content_id"])
            ok &= self.check(f"{node} downloaded, verified and played the signed bulletin "
                             f"(result {rec[1]['result'] if rec else 'none'})",
                             bool(rec) and rec[1]["result"] == "completed")
        for node in self.node_ids:
            if self.box.nodes[node].groups[0] != "c27787":  # another commune: not a target
                heard = self._record(node, body["content_id"], timeout=0.5)
                ok &= self.check(f"{node} (another commune) stayed silent", heard is None)
        self.envelope = self.sim.sent and self.sim.sign(self.sim.sent[-1])
        return ok

    def forged_and_replayed(self) -> bool:
        from node.trust import keys as ed25519

        forger = ed25519.generate()  # a key the district never listed in the trust document
        cmd = self.sim.command("play", {**self.sim.play_body(self.media / "bulletin.wav", None, level="emergency"),
                                        "content_id": "forged-alarm"}, [self.first])
        self.sim.send_envelope(self.sim.sign(cmd, keys=[forger, forger]), [self.first])
        self.tl.say("an attacker with a valid broker certificate sends an emergency signed by its own key")
        # Nothing inside an unverified payload is trusted, not even its id: match the topic and reason.
        hit = self._event(self.first, lambda o: o.get("type") == "rejected"
                          and (o.get("data") or {}).get("topic") == f"spk/node/{self.first}/cmd"
                          and (o.get("data") or {}).get("reason") in ("unknown_key", "bad_signature"))
        reason = hit[1]["data"]["reason"] if hit else None
        ok = self.check(f"forged command rejected with reason code {reason}", reason == "unknown_key")
        self.sim.send_envelope(self.envelope, ["c27787"])
        self.tl.say("the attacker replays the district's genuine bulletin command, byte for byte")
        hit = self._event(self.first, lambda o: o.get("type") == "rejected"
                          and (o.get("data") or {}).get("reason") == "replayed")
        return self.check("replayed command rejected with reason code replayed", bool(hit)) and ok

    def programme_and_emergency(self) -> bool:
        music = make_tone(self.media / "chuong-trinh.wav", seconds=12)
        url = self.box.content.publish(music)
        entry = {k: v for k, v in self.sim.play_body(music, url, content_id="chuong-trinh-sang").items()
                 if k in ("content_id", "sha256", "length", "duration", "codec", "url")}
        start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4)
        schedule = {"version": 1, "timezone": "Asia/Ho_Chi_Minh", "slots": [],
                    "once": [{"id": "buoi-sang", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 40,
                              "level": "normal", "volume": 70, "playlist": [entry, dict(entry)]}]}
        self.sim.send("schedule", schedule, [self.first])
        self.tl.say(f"district sent schedule v1: programme 'buoi-sang' at {start:%H:%M:%S} UTC on {self.first}")
        started = self.tl.wait_for(lambda t, o: t == f"spk/node/{self.first}/delta"
                                   and (o.get("play") or {}).get("item") == "chuong-trinh-sang", 30)
        self.check("scheduled programme started on time", bool(started))
        time.sleep(2)
        alarm = make_speech(self.media / "khan-cap.wav", "Khẩn cấp. Bão số ba sắp đổ bộ. Đề nghị bà con sơ tán.")
        body = self.sim.play_body(alarm, self.box.content.publish(alarm), level="emergency", content_id="bao-so-3")
        self.sim.send("play", body, [self.first])
        self.tl.say("district sent an EMERGENCY bulletin (two signatures: emergency-a and emergency-b)")
        cut = self._record(self.first, "chuong-trinh-sang", "preempted")
        ok = self.check("emergency preempted the programme (record: preempted)", bool(cut))
        done = self._record(self.first, "bao-so-3", "completed")
        ok &= self.check("emergency bulletin played to the end", bool(done))
        resumed = self._record(self.first, "chuong-trinh-sang", "completed", timeout=60)
        ok &= self.check(f"programme resumed after the emergency (played {resumed[1]['seconds'] if resumed else 0}"
                         " s more) and completed", bool(resumed) and resumed[1]["seconds"] > 1)
        return ok

    def live_relay(self) -> bool:
        """A live relay on the district's own CA, opened by the node itself (libVLC gets the bytes
        through a pipe); the same relay offered over plain http is refused before it can sound."""
        radio = make_tone(self.media / "vov1.wav", seconds=14, freq=523.0)
        url = self.box.content.publish_live(radio, "live/vov1")
        plain = url.replace("https://", "http://", 1)
        # The district tool itself refuses to sign this (it runs the node's parser first), so it is signed
        # around that check, as an old or misconfigured district tool would: the node must refuse it.
        from node.trust.envelope import PAYLOAD_COMMAND
        from provisioning.district import signing

        command = self.sim.command("live", {"url": plain, "max_duration": 60, "level": "normal", "grace": 3},
                                   [self.first])
        self.sim.send_envelope(signing.sign_envelope(PAYLOAD_COMMAND, signing.encode_body(command),
                                                     self.sim.ws.signing_keys(command)), [self.first])
        self.tl.say(f"a district tool that skips the check sends a live relay over plain http ({plain})")
        refused = self._event(self.first, lambda o: o.get("type") == "rejected"
                              and (o.get("data") or {}).get("reason") == "live_url_refused")
        ok = self.check("plain-http live relay refused with reason code live_url_refused", bool(refused))
        cid = self.sim.send("live", {"url": url, "max_duration": 10, "level": "normal", "grace": 3}, [self.first])
        self.tl.say(f"district relays a live stream over https on its own CA ({url}), command {cid}")
        rec = self._event(self.first, lambda o: o.get("kind") == "play" and o.get("command_id") == cid, 60)
        ok &= self.check(f"live relay played through the node's own TLS (result {rec[1]['result'] if rec else 'none'},"
                         f" {rec[1]['seconds'] if rec else 0} s)", bool(rec) and rec[1]["result"] == "completed")
        peers = {cn for name, cn in self.box.content.requests if name == "live/vov1"}
        ok &= self.check(f"every live connection was the node's, with its client certificate ({', '.join(peers)})",
                         peers == {self.first})
        return ok

    def heartbeat_and_door(self) -> bool:
        from provisioning.district.watch import NodeTable

        node = self.box.nodes[self.first]
        send_sim(node, {"input": "door", "active": True})
        self.tl.say(f"technician opens the cabinet door of {self.first}")
        raised = self._event(self.first, lambda o: o.get("type") == "alarm_raised"
                             and (o.get("data") or {}).get("alarm") == "door_open")
        ok = self.check("door-open alarm raised", bool(raised))
        send_sim(node, {"input": "door", "active": False})
        cleared = self._event(self.first, lambda o: o.get("type") == "alarm_cleared"
                              and (o.get("data") or {}).get("alarm") == "door_open")
        ok &= self.check("door-open alarm cleared when the door closed", bool(cleared))
        table = NodeTable()
        for at, topic, obj in self.tl.seen:
            table.apply(topic, obj, at)
        print("\n" + table.render(time.time()) + "\n", flush=True)
        return ok

    def run(self, extra_steps=()) -> bool:
        # The live relay runs while nothing is on air: a normal-level relay waits behind a running
        # programme slot (priority "plays first" but never cuts), and would expire in the queue.
        steps = [self.all_online, self.signed_bulletin, self.forged_and_replayed, self.live_relay,
                 self.programme_and_emergency, self.heartbeat_and_door, *extra_steps]
        ok = True
        for step in steps:
            ok &= step()
        return ok


def send_sim(node, message: dict) -> None:
    """Act on a simulated node's cabinet (simulation only: its sim.sock control socket)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(message).encode(), str(node.state_dir / "run" / "sim.sock"))


def make_speech(path: Path, text: str) -> Path:
    """A spoken bulletin with espeak-ng (Vietnamese voice), or a tone when espeak-ng is missing."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-v", "vi", "-s", "150", "-w", str(path), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return path
    return make_tone(path, 4)


def make_tone(path: Path, seconds: float, freq: float = 440.0, rate: int = 16000) -> Path:
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            t = i / rate
            # a little melody: the pitch changes every half second, so it is not mistaken for a test tone
            f = freq * (1.0, 1.25, 1.5, 1.125)[int(t * 2) % 4]
            frames += struct.pack("<h", int(9000 * math.sin(2 * math.pi * f * t)))
        w.writeframes(bytes(frames))
    return path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speaker-district demo", description=__doc__.splitlines()[0])
    p.add_argument("--once", action="store_true", help="run the fixed scenario, exit 0 if it succeeded")
    p.add_argument("--dir", help="where to put the district, broker, node state and output WAVs "
                                 "(default: a new temporary directory, kept for inspection)")
    p.add_argument("--nodes", type=int, default=2, choices=range(1, len(COMMUNES) + 1),
                   help="number of simulated nodes")
    p.add_argument("--update", action="store_true",
                   help="also update the first node to a signed new release and roll back a broken one "
                        "(builds real wheels: about a minute more)")
    args = p.parse_args(argv)

    from provisioning.district.box import DistrictInABox
    from provisioning.district.simulator import DistrictSimulator

    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="speaker-demo-"))
    box = DistrictInABox(directory)
    print(f"speaker-district demo: district-in-a-box in {directory}", flush=True)
    timeline = None
    ok = False
    try:
        box.create()
        for commune, district, province, cluster in COMMUNES[: args.nodes]:
            node = box.add_node(commune, district, province, cluster)
            print(f"  provisioned node {node.node_id} (groups {', '.join(node.groups)})")
        broker = box.start_broker()
        print(f"  Mosquitto (mutual TLS, per-node ACL) on {broker.address}")
        box.start_district()
        print("  district service (speaker-district serve): signed time answers to node nonces, run from "
              f"{box.serve_dir} (speaker-district serve-dir: only the online keys time + collector)")
        box.start_collector()
        print(f"  record collector (persistent session, signed acknowledgements) into {box.records_db}")
        content = box.start_content_server()
        print(f"  content server (HTTPS, client certificates) on {content.host}:{content.port}")
        timeline = Timeline(box.workspace, broker.address)
        updatable = None
        if args.update:
            from provisioning.district.demo_update import UpdatableNode
            updatable = UpdatableNode(next(iter(box.nodes.values())), directory / "releases")
            updatable.prepare(timeline.say)
        box.start_nodes()
        sim = DistrictSimulator(box.workspace, broker.address)
        scenario = Scenario(box, timeline, sim)
        extra = []
        if updatable:
            from provisioning.district.demo_update import software_update
            extra.append(lambda: software_update(scenario, updatable))
        ok = scenario.run(extra)
        if not args.once and ok:
            timeline.say("demo running; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        sim.close()
    finally:
        codes = box.stop(node_timeout=8)
        if timeline:
            time.sleep(0.3)  # let the last offline statuses print
            timeline.close()
        clean = all(code == 0 for code in codes.values())
        if not clean:
            print(f"nodes did not stop cleanly: {codes}", file=sys.stderr)
        ok = ok and clean
    passed = sum(1 for _, good in scenario.results if good) if timeline else 0
    failed = sum(1 for _, good in scenario.results if not good) if timeline else 0
    for node in box.nodes.values():
        wavs = sorted(node.wav_dir.glob("*.wav"))
        print(f"  {node.node_id}: {len(wavs)} output WAV files in {node.wav_dir}")
        print(f"  {node.node_id}: log {node.log_path}; records not yet acknowledged by the district stay in "
              f"{node.state_dir / 'outbox.db'}")
    if box.records_db.exists():
        from provisioning.district.reports import print_month_report

        print(f"\nthe district's database {box.records_db} (speaker-district report DIR --month ...):")
        print_month_report(str(box.records_db), box.workspace)
    print(f"\ndemo {'succeeded' if ok else 'FAILED'}: {passed} checks passed, {failed} failed; files in {directory}")
    return 0 if ok else 1
