"""Benchmark 4G traffic as IP bytes on the link (headers included), beside a model from first principles.

    .venv/bin/python benchmarks/bench_traffic.py            # defaults, 15-min idle window, 5 play commands
    .venv/bin/python benchmarks/bench_traffic.py --quick    # 60 s idle, keep-alive 10 s, heartbeat 30 s, 2 plays

A real daemon (`speaker-node run`, pty modem simulator) runs in a network namespace of its own, joined to
this host by a veth pair that stands for the air (benchmarks/netcapture.py: IPv4, MTU 1500, offloads
off). A real Mosquitto (TLS, shipped ACL), the content server, the record collector (signed acks) and a
district subscriber run on the host and listen on the host end. Every packet on the pair is captured
(AF_PACKET, root); a packet's IPv4 total length is what it costs on the air above layer 2.

Measured: IP bytes per idle hour (keep-alives, full heartbeats, deltas), per reconnect, per play
command (command, accepted event, its ack, deltas), per play record (record + the collector's ack),
per time request when the node asks for one, and the audio download. Each TLS record on the MQTT
connection is attributed to a message (TLS records are cut from the TCP stream, nothing is decrypted);
a bare ACK is charged to the data it acknowledges.

Model: from message sizes alone (the payloads the district subscriber, the collector and the sender
saw) plus documented per-packet overheads: MQTT 5 fixed header, topic and packet id; TLS 1.3 record 22 B
(5 header + 1 inner type + 16 AEAD tag; 29 B under TLS 1.2 GCM); TCP/IPv4 52 B per segment (20 IP + 20
TCP + 12 timestamps option, Linux default), MSS 1448; and bounds on the bare ACKs (Model). It never reads
the capture.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Subscriber,
    command_line,
    configure,
    machine_line,
    tone_wav,
    wait_startup_link_event,
)
from netcapture import Capture, NetworkUnavailable, NodeNetwork, tls_records  # noqa: E402

HOUR, DAY, MONTH_DAYS = 3600, 86400, 30
GOAL_KB_DAY = 150          # issue "Health": idle TLS bytes per day at the defaults

# --- the model's constants (documented, not measured) ------------------------------------------------
TCPIP = 52                 # IPv4 20 + TCP 20 + timestamps option 12 (Linux default), every segment
MSS = 1500 - TCPIP         # MTU 1500 (LTE bearers are 1500 or less: less means more segments)
TLS13, TLS12 = 22, 29      # per application-data record: 5 + 1 + 16 (TLS 1.3); 5 + 8 + 16 (TLS 1.2 GCM)
PINGREQ = PINGRESP = 2     # MQTT fixed header only
PUBACK = 4                 # MQTT 5: header 2 + packet id 2 (reason "success" and no properties: omitted)


def varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def publish_len(topic: str, payload: int, qos: int) -> int:
    """MQTT 5 PUBLISH: fixed header + topic (2 + len) + packet id (QoS > 0) + properties length (0) + payload."""
    rest = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + payload
    return 1 + varint_len(rest) + rest


class Model:
    """IP bytes of MQTT exchanges from message sizes and the constants above.

    Bare ACKs are bounded, not guessed: every data segment is acknowledged (RFC 9293), by a bare ACK of
    its own or riding on data going the other way. `fewest`: every ACK rides where it can - the response
    (PUBACK, PINGRESP) carries the request's ACK (Linux delays an ACK up to 40 ms, and the peer answers
    sooner), only the response needs a bare ACK, and a QoS 0 publish none (the next packet the other
    way carries it). `most`: each data segment gets a bare ACK of its own (Linux quick-ack mode, entered
    when data arrives after an idle longer than the RTO - common for a keep-alive or a heartbeat)."""

    def __init__(self, tls_overhead: int, acks: str):
        self.tls, self.acks = tls_overhead, acks

    def segments(self, mqtt_bytes: int) -> int:
        return math.ceil((mqtt_bytes + self.tls) / MSS)

    def data_bytes(self, mqtt_bytes: int) -> int:
        return mqtt_bytes + self.tls + TCPIP * self.segments(mqtt_bytes)

    def exchange(self, request: int, response: int | None) -> int:
        """A request, its response (PUBACK, PINGRESP; none for QoS 0) and the bare ACKs."""
        parts = [request] + ([response] if response is not None else [])
        segments = sum(self.segments(p) for p in parts)
        bare_acks = (1 if response is not None else 0) if self.acks == "fewest" else segments
        return sum(self.data_bytes(p) for p in parts) + TCPIP * bare_acks

    def keepalive(self) -> int:
        return self.exchange(PINGREQ, PINGRESP)

    def publish(self, topic: str, payload: int, qos: int) -> int:
        return self.exchange(publish_len(topic, payload, qos), PUBACK if qos else None)


# --- attribution of the captured MQTT connection ----------------------------------------------------
class Attribution:
    """Names each TLS application-data record on the node's MQTT connection by the message it carried,
    using the sizes the district side saw (a PUBLISH of topic T and payload P is publish_len(T, P, qos)
    + the TLS overhead on the wire), then pairs each PUBLISH with its PUBACK."""

    def __init__(self, records, tls_overhead: int, seen_up, sent_down):
        self.records = [r for r in records if r.content_type == 23]
        self.tls = tls_overhead
        self.exchanges: list[dict] = []
        self._name(seen_up, sent_down)

    def _name(self, seen_up, sent_down) -> None:
        free_up = list(seen_up)      # (t, topic, payload bytes, label, ids)
        free_down = list(sent_down)
        pending: dict[bool, list[dict]] = {True: [], False: []}  # publishes waiting for a PUBACK, by sender
        ping = None
        for record in self.records:
            inner = record.length - self.tls
            if inner == PINGREQ and record.up:
                ping = {"kind": "keep-alive", "t": record.t, "records": [record]}
                self.exchanges.append(ping)
            elif inner == PINGRESP and not record.up and ping is not None:
                ping["records"].append(record)
                ping = None
            elif inner == PUBACK:
                waiting = pending[not record.up]
                if waiting:
                    waiting.pop(0)["records"].append(record)
                else:
                    self.exchanges.append({"kind": "unmatched PUBACK", "t": record.t, "records": [record]})
            else:
                pool = free_up if record.up else free_down
                match = self._match(record, inner, pool)
                if match is None:
                    self.exchanges.append({"kind": "unattributed " + ("up" if record.up else "down"),
                                           "t": record.t, "records": [record]})
                    continue
                pool.remove(match)
                t, topic, size, label, qos, ids = match
                exchange = {"kind": label, "t": record.t, "topic": topic, "payload": size, "qos": qos,
                            "ids": ids, "records": [record]}
                self.exchanges.append(exchange)
                if qos:
                    pending[record.up].append(exchange)

    def _match(self, record, inner: int, pool):
        best = None
        for item in pool:
            t, topic, size, label, qos, ids = item
            if publish_len(topic, size, qos) != inner or not -5.0 <= t - record.t <= 5.0:
                continue
            if best is None or abs(t - record.t) < abs(best[0] - record.t):
                best = item
        return best

    @staticmethod
    def ip_bytes(exchange: dict) -> float:
        return sum(r.ip_bytes for r in exchange["records"])

    def between(self, since: float, until: float) -> list[dict]:
        return [e for e in self.exchanges if since <= e["t"] < until]


def event_label(obj: dict | None) -> str:
    obj = obj or {}
    if obj.get("kind") == "play":
        return "play record"
    if obj.get("kind") == "event":
        return f"event {obj.get('type')}"
    return "?"


def _uplink_messages(sub: Subscriber, node_id: str) -> list[tuple]:
    """What the node published, as the district received it: (t, topic, bytes, label, qos, ids)."""
    out = []
    for s in list(sub.seen):
        if not s.topic.startswith(f"spk/node/{node_id}/"):
            continue
        leaf = s.topic.split(f"spk/node/{node_id}/", 1)[1]
        if leaf == "status":
            label, qos = "status (full heartbeat)", 1
            if (s.obj or {}).get("online") is False:
                label = "status offline (will)"
        elif leaf == "delta":
            label, qos = "delta", 0
        elif leaf == "events":
            label, qos = event_label(s.obj), 1
        elif leaf == "time/req":
            label, qos = "time request", 0
        else:
            label, qos = leaf, 1
        ids = [(s.obj or {}).get("id")] if leaf == "events" else []
        out.append((s.t, s.topic, s.size, label, qos, ids))
    return out


def _delta_fields(sub: Subscriber, node_id: str, since: float, until: float) -> dict[str, int]:
    """Which readings the idle window's deltas carried (what moved past its deadband)."""
    return dict(Counter(key for s in list(sub.seen) if s.topic == f"spk/node/{node_id}/delta" and since <= s.t < until
                        for key in (s.obj or {}) if key not in ("v", "node", "seq", "ts")))


def hook_publishes(client, log: list, label_of, qos: int | None = None) -> None:
    """Record (t, topic, bytes, label, qos, ids) of everything `client` publishes (collector acks, time
    answers, commands). `qos`: the QoS the node receives it at, when its subscription lowers it."""
    original = client.publish
    delivered = qos

    def publish(topic, payload=None, qos=0, retain=False, properties=None):
        label, ids = label_of(topic, payload)
        log.append((time.monotonic(), topic, len(payload or b""), label, qos if delivered is None else delivered, ids))
        return original(topic, payload, qos=qos, retain=retain, properties=properties)

    client.publish = publish


def ack_label(topic: str, payload: bytes) -> tuple[str, list[str]]:
    try:
        body = json.loads(base64.b64decode(json.loads(payload)["payload"]))
        return "ack", list(body.get("ids", []))
    except (ValueError, KeyError, TypeError):
        return "ack", []


def negotiated_tls(workspace: Path, address: str) -> str:
    """The TLS version the broker negotiates with a client configured like the node (probed on the host
    side: the probe's bytes do not cross the pair)."""
    import socket

    from provisioning.district.localbroker import client_tls

    context = client_tls(workspace, "district")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.version() or "?"


def run(args) -> dict:
    from node.topics import mqtt_client_id
    from provisioning.district.box import DistrictInABox
    from provisioning.district.collector import CollectorDuty
    from provisioning.district.content_server import ContentServer
    from provisioning.district.localbroker import LocalBroker
    from provisioning.district.simulator import DistrictSimulator
    from provisioning.district.timeservice import TimeService
    from provisioning.district.workspace import init_workspace

    quick = args.quick
    idle_s = args.seconds or (60 if quick else 900)
    keepalive, full_every, modem_poll = (10, 30, 10) if quick else (60, 900, 60)
    from node.config import SCHEMA

    shipped_refresh = SCHEMA["clock"]["time_refresh"].default     # seconds
    time_refresh = 60 if quick else shipped_refresh
    plays = args.plays or (2 if quick else 5)
    result: dict = {"idle_s": idle_s, "keepalive": keepalive, "full_every": full_every, "plays": plays,
                    "time_refresh": time_refresh}
    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp, NodeNetwork(str(os.getpid())) as net:
        cap = Capture(net.host_if, net.node_ip)
        box = DistrictInABox(Path(tmp))
        sub = sim = None
        acks: list = []
        answers: list = []
        timeservice = None
        sim_log: list = []
        try:
            init_workspace(box.workspace, district=box.district, broker_hosts=[net.host_ip], force=True)
            node = box.add_node("27787", "760", "75", 1)
            box.broker = broker = LocalBroker(box.workspace, box.dir / "broker", host=net.host_ip,
                                              nodes={node.node_id: node.groups}).start()
            # No NTP flag: the node's trusted time is the district's signed time answers (issue 9), as in
            # the field without NTP; its requests and the answers are part of the traffic.
            configure(node, [broker.address], keepalive=keepalive, heartbeat_full=full_every, modem=True,
                      modem_poll=modem_poll,
                      extra="" if time_refresh == shipped_refresh else f"\n[clock]\ntime_refresh = {time_refresh}\n")
            timeservice = TimeService(box.workspace, broker.address)
            timeservice.start()
            hook_publishes(timeservice._client, answers, lambda topic, payload: ("time answer", []), qos=0)
            box.content = content = ContentServer(box.workspace, box.dir / "content", host=net.host_ip).start()
            box.collector = CollectorDuty(box.workspace, db=str(box.records_db), brokers=[broker.address])
            box.collector.start()
            for client in box.collector.collector.clients:
                hook_publishes(client, acks, ack_label)
            tls_version = negotiated_tls(box.workspace, broker.address)
            result["tls"] = tls_version
            prefix = f"spk/node/{node.node_id}/"
            sub = Subscriber(box.workspace, broker.address, [prefix + "#"],
                             client_id=mqtt_client_id("district", "bench-sub"))
            sim = DistrictSimulator(box.workspace, broker.address)
            hook_publishes(sim.client, sim_log, lambda topic, payload: ("play command", []))
            node.argv = net.wrap([sys.executable, "-m", "node", "run", "--config", str(node.config)])
            t_start = time.monotonic()
            node.start()
            online = sub.wait_for(lambda s: s.topic == prefix + "status" and (s.obj or {}).get("online"), 60)
            # The connect burst: TLS handshake, CONNECT, SUBSCRIBE, retained status, `started` + its ack.
            _wait_quiet(cap, 2.0, 30)
            t_connected = time.monotonic()
            # The one-off start-up `link_restored` event (second modem poll) stays out of the idle window.
            wait_startup_link_event(sub, node.node_id, t_start, modem_poll)
            _wait_quiet(cap, 2.0, 30)
            t_a = time.monotonic()
            time.sleep(idle_s)
            t_b = time.monotonic()
            clip = tone_wav(box.dir / "clip.wav", 2.0)
            url = content.publish(clip)
            result["clip_bytes"] = clip.stat().st_size
            play_windows = []
            for n in range(plays):
                body = sim.play_body(clip, url, content_id="bench-clip")
                t0 = time.monotonic()
                sim.send("play", body, [node.node_id])
                record = sub.wait_for(lambda s, t0=t0: s.t > t0 and (s.obj or {}).get("kind") == "play", 60)
                _wait_for(lambda record=record: any(record.obj["id"] in a[5] for a in acks), 20)
                _wait_quiet(cap, 2.5, 30)
                play_windows.append((t0, record.obj["id"], time.monotonic()))
            result["play_windows"] = play_windows
            t_c = time.monotonic()
            result["sim_sent"] = list(sim_log)
            codes = node.terminate()
            time.sleep(0.5)
            t_end = time.monotonic()
        finally:
            if sim:
                sim.close()
            if timeservice:
                timeservice.stop()
            box.stop()
            if sub:
                sub.close()
            cap.close()
        counters = net.counters()
        result.update(t_start=t_start, online=online.t, t_connected=t_connected, t_a=t_a, t_b=t_b, t_c=t_c,
                      t_end=t_end, codes=codes, node_id=node.node_id, broker_port=broker.port,
                      content_port=content.port, offloads_off=net.offloads_off, counters=counters,
                      frames_bytes=cap.frames_bytes, other_frames=list(cap.other_frames),
                      packets=cap.snapshot(), seen=_uplink_messages(sub, node.node_id), acks=acks, answers=answers,
                      delta_fields=_delta_fields(sub, node.node_id, t_a, t_b))
    return result


def _wait_quiet(cap: Capture, quiet_s: float, timeout: float) -> None:
    """Until no packet crossed the pair for quiet_s seconds (the node and the district are done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        packets = cap.packets
        last = packets[-1].t if packets else 0.0
        if time.monotonic() - last >= quiet_s:
            return
        time.sleep(0.2)


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the collector did not acknowledge the play record")
        time.sleep(0.05)


# --- analysis ---------------------------------------------------------------------------------------
BOUNDS = ("fewest", "most")


def analyse(r: dict) -> dict:
    tls = TLS13 if r["tls"] == "TLSv1.3" else TLS12
    models = {b: Model(tls, b) for b in BOUNDS}
    packets = r["packets"]
    mqtt_conns: dict[int, list] = defaultdict(list)
    for p in packets:
        if p.proto == 6 and p.peer_port == r["broker_port"]:
            mqtt_conns[p.node_port].append(p)
    records = []
    for conn in mqtt_conns.values():
        records += tls_records(conn)[0]
    records.sort(key=lambda rec: rec.t)
    att = Attribution(records, tls, r["seen"], r["acks"] + r["sim_sent"] + r["answers"])
    for e in att.exchanges:
        if e["kind"].startswith("unattributed") and e["t"] < r["t_connected"]:
            e["kind"] = "connect"   # TLS 1.3 sends the encrypted handshake as application data too
    node_topic = f"spk/node/{r['node_id']}/"

    def ip_in(since, until, port=None):
        return sum(p.ip_bytes for p in packets if since <= p.t < until and (port is None or p.peer_port == port))

    def modelled(exchanges, bound):
        return sum(models[bound].publish(e["topic"], e["payload"], e["qos"]) for e in exchanges if "topic" in e)

    out = {"tls": tls, "att": att, "models": models, "mqtt_connections": len(mqtt_conns)}
    # Idle window: every IP packet on the pair, whatever it is.
    window = r["t_b"] - r["t_a"]
    kinds = defaultdict(list)
    for e in att.between(r["t_a"], r["t_b"]):
        kinds[e["kind"]].append(e)
    out["idle_measured"] = ip_in(r["t_a"], r["t_b"])
    out["idle_tls"] = sum(rec.length for rec in records if r["t_a"] <= rec.t < r["t_b"])
    out["idle_packets"] = sum(1 for p in packets if r["t_a"] <= p.t < r["t_b"])
    out["idle_kinds"] = {k: (len(v), statistics.median(att.ip_bytes(e) for e in v)) for k, v in kinds.items()}
    scale = HOUR / window
    # The periodic snapshot's size in the window (snapshots at connect or after a change differ in size).
    statuses = [m for m in r["seen"] if m[3] == "status (full heartbeat)"]
    in_window = [m[2] for m in statuses if r["t_a"] <= m[0] < r["t_b"]]
    status_payload = statistics.median(in_window or [m[2] for m in statuses])
    rows = {}
    for bound, model in models.items():
        hour = {"keep-alives (one per keep-alive interval)": (HOUR / r["keepalive"], model.keepalive()),
                "full heartbeats (one per heartbeat_full)": (HOUR / r["full_every"],
                                                             model.publish(node_topic + "status", status_payload, 1))}
        requests = [m for m in r["seen"] if m[3] == "time request"]
        answers = r["answers"]
        if requests and answers:
            each = (model.publish(requests[0][1], statistics.median(m[2] for m in requests), 0)
                    + model.publish(answers[0][1], statistics.median(m[2] for m in answers), 0))
            hour[TIME_ROW] = (HOUR / r["time_refresh"], each)
        # What the readings produced in the window (deltas; events and their acks), at their own sizes.
        for label in ("delta", "event", "ack"):
            msgs = [m for m in r["seen"] + r["acks"] if r["t_a"] <= m[0] < r["t_b"] and m[3].startswith(label)]
            if msgs:
                cost = sum(model.publish(m[1], m[2], m[4]) for m in msgs)
                hour[f"{label}s as received in the window, x {scale:.1f}" if label != "delta" else DELTA_ROW] = (
                    len(msgs) * scale, cost / len(msgs))
        rows[bound] = hour
    out["hour_model_rows"] = rows
    out["hour_model"] = {b: sum(n * each for n, each in rows[b].values()) for b in BOUNDS}
    out["hour_measured"] = out["idle_measured"] * scale
    # A quiet node: the same window without the deltas the readings of this shared machine produced.
    periodic = ("keep-alive", "status (full heartbeat)", "time request", "time answer")
    out["quiet_hour_measured"] = scale * sum(att.ip_bytes(e) for k in periodic for e in kinds.get(k, []))
    out["quiet_hour_model"] = {b: sum(n * each for name, (n, each) in rows[b].items() if name in PERIODIC_ROWS)
                               for b in BOUNDS}
    out["quiet_day_tls"] = DAY / window * sum(r.length for k in periodic for e in kinds.get(k, [])
                                              for r in e["records"])
    out["connect_measured"] = ip_in(r["t_start"], r["t_connected"])
    per_command, per_record, downloads = [], [], []
    command_model = {b: [] for b in BOUNDS}
    record_model = {b: [] for b in BOUNDS}
    detail = Counter()
    for t0, record_id, t_quiet in r["play_windows"]:
        exchanges = [e for e in att.between(t0 - 0.05, t_quiet) if e["kind"] != "keep-alive"]
        rec = [e for e in exchanges if e["kind"] == "play record" or (e["kind"] == "ack" and record_id in e["ids"])]
        # A periodic heartbeat that happens to fall inside the window is idle traffic, not the command's.
        cmd = [e for e in exchanges if e not in rec and e["kind"] != "status (full heartbeat)"]
        per_record.append(sum(att.ip_bytes(e) for e in rec))
        per_command.append(sum(att.ip_bytes(e) for e in cmd))
        for b in BOUNDS:
            record_model[b].append(modelled(rec, b))
            command_model[b].append(modelled(cmd, b))
        for e in cmd + rec:
            detail[e["kind"]] += 1
        downloads.append(ip_in(t0, t_quiet, r["content_port"]))
    med = statistics.median
    out.update(per_command=med(per_command), per_record=med(per_record), runs=len(per_command),
               command_model={b: med(v) for b, v in command_model.items()},
               record_model={b: med(v) for b, v in record_model.items()}, downloads=downloads,
               play_detail={k: v / len(per_command) for k, v in detail.items()})
    unnamed = [e for e in att.exchanges if e["kind"].startswith(("unattributed", "unmatched"))]
    out["unnamed"] = (len(unnamed), sum(att.ip_bytes(e) for e in unnamed))
    out["time_requests"] = [e for e in att.exchanges if e["kind"] == "time request" and e["t"] >= r["t_connected"]]
    out["time_answers"] = [e for e in att.exchanges if e["kind"] == "time answer" and e["t"] >= r["t_connected"]]
    for name, hour_measured, hour_model in (("month", out["hour_measured"], out["hour_model"]),
                                            ("quiet_month", out["quiet_hour_measured"], out["quiet_hour_model"])):
        out[f"{name}_measured"] = project_month(hour_measured, out["per_command"], out["per_record"],
                                                out["connect_measured"])
        out[f"{name}_model"] = {b: project_month(hour_model[b], out["command_model"][b], out["record_model"][b],
                                                 out["connect_measured"]) for b in BOUNDS}
    return out


TIME_ROW = "signed time: request (QoS 0) + answer (QoS 0), one per [clock] time_refresh"
PERIODIC_ROWS = ("keep-alives (one per keep-alive interval)", "full heartbeats (one per heartbeat_full)", TIME_ROW)
DELTA_ROW = "deltas as received in the window (this machine's readings), scaled to an hour"
MONTH_ASSUMPTION = ("30 days idle at these settings, 30 play commands with their records, 60 more records of "
                    "scheduled slots, 30 reconnects (model: the reconnect as measured)")


def project_month(per_hour: float, per_command: float, per_record: float, per_connect: float) -> float:
    return per_hour * 24 * MONTH_DAYS + 30 * (per_command + per_record) + 60 * per_record + 30 * per_connect


def _row(name: str, measured: float, low: float, high: float) -> str:
    inside = "yes" if low <= measured <= high else "**no**"
    return (f"| {name} | {measured:,.0f} | {low:,.0f} - {high:,.0f} | {measured / low:.3f} / {measured / high:.3f} "
            f"| {inside} |")


def report(r: dict, a: dict, argv: list[str]) -> None:
    med = statistics.median
    low, high = a["models"]["fewest"], a["models"]["most"]
    att = a["att"]
    print("### 4G traffic: IP bytes on the link (capture on a veth pair) beside a first-principles model\n")
    day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"`{command_line('bench_traffic.py', argv)}` on {machine_line()}; {day}\n")
    print(f"Negotiated {r['tls']} (model: {a['tls']} B per TLS record); IPv4, MTU 1500, offloads "
          f"{'off' if r['offloads_off'] else 'ON (ethtool missing: GSO frames counted as captured)'}; "
          f"{a['mqtt_connections']} MQTT connection(s); keep-alive {r['keepalive']} s, full heartbeat every "
          f"{r['full_every']} s{' (scaled down for CI)' if r['keepalive'] != 60 else ' (the defaults)'}; "
          f"idle window {r['idle_s']:.0f} s; {a['runs']} play commands of a 2-s clip.\n")
    c = r["counters"]
    print(f"Capture check: the capture saw {r['frames_bytes']:,} frame bytes, the interface counted "
          f"{c['rx_bytes'] + c['tx_bytes']:,} ({c['rx_packets'] + c['tx_packets']} frames); non-IP frames (ARP): "
          f"{len(r['other_frames'])}, {sum(b for _, b in r['other_frames'])} B, not in the IP figures.\n")
    print("| unit | measured IP B (median) | model IP B (fewest - most ACKs) | measured / model | in range |")
    print("|---|---:|---:|---:|---:|")
    kinds = a["idle_kinds"]
    if "keep-alive" in kinds:
        n, b = kinds["keep-alive"]
        print(_row(f"keep-alive: PINGREQ + PINGRESP + ACKs ({n} in the window)", b, low.keepalive(), high.keepalive()))
    for kind, qos, text in (("status (full heartbeat)", 1, "full heartbeat: status {p:.0f} B, QoS 1 + PUBACK + ACKs"),
                            ("delta", 0, "delta {p:.0f} B, QoS 0 + ACK")):
        found = [e for e in att.exchanges if e["kind"] == kind and e["t"] >= r["t_connected"]]
        if found:
            pick = sorted(found, key=att.ip_bytes)[len(found) // 2]     # the median exchange itself
            print(_row(text.format(p=pick["payload"]) + f" ({len(found)} seen)", att.ip_bytes(pick),
                       low.publish(pick["topic"], pick["payload"], qos),
                       high.publish(pick["topic"], pick["payload"], qos)))
    print(_row(f"**per play command**: command + PUBACK, `accepted` event + PUBACK, its signed ack + PUBACK, "
               f"deltas ({a['runs']} runs)", a["per_command"], a["command_model"]["fewest"],
               a["command_model"]["most"]))
    print(_row("**per play record**: record + PUBACK, the collector's signed ack + PUBACK", a["per_record"],
               a["record_model"]["fewest"], a["record_model"]["most"]))
    print(_row(f"**per idle hour**: every IP packet on the pair in the {r['idle_s']:.0f}-s window x "
               f"{HOUR / r['idle_s']:.1f}", a["hour_measured"], a["hour_model"]["fewest"], a["hour_model"]["most"]))
    print(_row("**per quiet idle hour**: keep-alives, full heartbeats and signed-time requests only (the "
               "window's deltas left out: a node whose readings do not move sends none)", a["quiet_hour_measured"],
               a["quiet_hour_model"]["fewest"], a["quiet_hour_model"]["most"]))
    print(_row(f"**per node per month**, quiet ({MONTH_ASSUMPTION})", a["quiet_month_measured"],
               a["quiet_month_model"]["fewest"], a["quiet_month_model"]["most"]))
    deltas_per_hour = a["hour_model_rows"]["fewest"].get(DELTA_ROW, (0,))[0]
    print(_row(f"per node per month with this machine's deltas ({deltas_per_hour:.0f} an hour)",
               a["month_measured"], a["month_model"]["fewest"], a["month_model"]["most"]))
    print(f"| per (re)connect: TCP + TLS 1.3 handshake with client certificate, CONNECT, SUBSCRIBE, retained "
          f"status, start-up events + acks | {a['connect_measured']:,.0f} | not modelled | | |")
    if a["time_requests"] and a["time_answers"]:
        req, ans = a["time_requests"], a["time_answers"]
        b = med(att.ip_bytes(e) for e in req) + med(att.ip_bytes(e) for e in ans)
        bounds = [med(m.publish(e["topic"], e["payload"], 0) for e in req)
                  + med(m.publish(e["topic"], e["payload"], 0) for e in ans) for m in (low, high)]
        print(_row(f"per signed-time request: request {med(e['payload'] for e in req):.0f} B + signed answer "
                   f"{med(e['payload'] for e in ans):.0f} B, QoS 0 both ({len(req)} after the connect)", b, *bounds))
    else:
        print("| per signed-time request | not measured: none after the connect | | | |")
    print()
    print("Model of the idle hour (counts from the settings; deltas and events at the sizes and counts the "
          "district received in the window):\n")
    print("| item | per hour | IP B each (fewest - most ACKs) | IP B/hour |")
    print("|---|---:|---:|---:|")
    for name in a["hour_model_rows"]["fewest"]:
        n, b_low = a["hour_model_rows"]["fewest"][name]
        _, b_high = a["hour_model_rows"]["most"][name]
        print(f"| {name} | {n:.1f} | {b_low:.0f} - {b_high:.0f} | {n * b_low:,.0f} - {n * b_high:,.0f} |")
    print(f"| **model** | | | **{a['hour_model']['fewest']:,.0f} - {a['hour_model']['most']:,.0f}** |")
    print()
    print("Measured in the idle window, by message (TLS records named by size against what the district "
          "received; bare ACKs charged to what they acknowledge):\n")
    print("| message | count | median IP B |")
    print("|---|---:|---:|")
    for kind, (n, b) in sorted(kinds.items()):
        print(f"| {kind} | {n} | {b:.0f} |")
    print(f"| (all IP packets in the window) | {a['idle_packets']} | total {a['idle_measured']:,} |")
    print()
    dl = [d for d in a["downloads"] if d]
    if dl:
        print(f"- audio download (HTTPS: its own TCP + TLS connection with client certificate): {dl[0]:,} IP B for "
              f"a {r['clip_bytes']:,}-byte WAV (+{dl[0] - r['clip_bytes']:,} B); the other "
              f"{len(a['downloads']) - len(dl)} plays of the same clip came from the cache")
    print(f"- messages per play command and its record (mean): {a['play_detail']}")
    if a["unnamed"][0]:
        print(f"- not attributed to a message after the connect: {a['unnamed'][0]} TLS records, "
              f"{a['unnamed'][1]:,.0f} IP B (in the idle-hour total only if inside the window)")
    tls_day, quiet_tls = a["idle_tls"] * DAY / r["idle_s"], a["quiet_day_tls"]
    scaled = " at these scaled settings" if r["keepalive"] != 60 else ""
    print(f"- deltas in the idle window carried: {r['delta_fields']} (readings of this shared machine that moved "
          "past their deadband: free disk as other jobs write, load)")
    print(f"- per idle day: measured {a['hour_measured'] * 24 / 1000:.0f} kB IP ({tls_day / 1000:.0f} kB TLS) with "
          f"those deltas; a quiet node {a['quiet_hour_measured'] * 24 / 1000:.0f} kB IP, {quiet_tls / 1000:.0f} kB "
          f"TLS. Health goal <= {GOAL_KB_DAY} kB/day in TLS bytes, quiet node: "
          f"{'met' if quiet_tls / 1000 <= GOAL_KB_DAY else 'NOT met'}{scaled}")
    print(f"- node exit code: {r['codes']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_traffic.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="idle window (default 900 = one full-heartbeat period; "
                                                      "--quick 60)")
    parser.add_argument("--plays", type=int, help="play commands after the idle window (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true",
                        help="CI: 60 s window, keep-alive 10 s, full heartbeat 30 s, 2 plays")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except NetworkUnavailable as exc:
        print(f"bench_traffic.py: skipped: {exc}")
        return 0
    analysis = analyse(result)
    report(result, analysis, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
