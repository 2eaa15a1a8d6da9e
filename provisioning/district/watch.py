"""`speaker-district watch DIR`: a live table of nodes built from their heartbeats.

Subscribes to PREFIX/node/+/status (retained snapshots and offline wills), PREFIX/node/+/delta and
PREFIX/node/+/events (alarm_raised / alarm_cleared keep the alarms column current between snapshots).
The table logic (NodeTable) is pure and tested without a broker; main() is the MQTT edge.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from node.reporting.heartbeat import apply_delta
from node.topics import mqtt_client_id

FULL_EVERY_S = 900  # node.reporting.heartbeat.Heartbeat default
STALE_AFTER_S = 2.5 * FULL_EVERY_S  # two missed snapshots and a half: silent, even without a will
MAX_PAYLOAD = 64 * 1024  # heartbeats are < 1 kB; anything this big is not ours
CLOCK_SKEW_S = 300


@dataclass
class NodeRow:
    node: str
    status: dict = field(default_factory=dict)  # last snapshot with deltas merged in
    online: bool | None = None
    reason: str | None = None  # "lost" (will) / "shutdown" when offline
    last_seen: float | None = None
    birth: int | None = None
    last_event: str | None = None

    def state(self, now: float, stale_after_s: float) -> str:
        if self.online is False:
            return "stopped" if self.reason == "shutdown" else "offline"
        if self.last_seen is None or now - self.last_seen > stale_after_s:
            return "silent"
        return "online" if self.online else "unknown"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def update_summary(sw: dict | None) -> str | None:
    """A software update in progress or just finished, as a short cell: '>0.2.0 trial', '!0.2.1'."""
    if not sw:
        return None
    if sw.get("state") not in (None, "idle"):
        return f">{sw.get('target')} {sw['state']}"
    if sw.get("result") == "rolled_back":
        return f"!{sw.get('target')} rolled back"
    if sw.get("result") == "failed":
        return f"!{sw.get('target')} failed"
    return None


class NodeTable:
    def __init__(self, prefix: str = "spk", stale_after_s: float = STALE_AFTER_S):
        self.prefix = prefix.rstrip("/")
        self.stale_after_s = stale_after_s
        self.nodes: dict[str, NodeRow] = {}
        self.ignored = 0  # messages that were not ours or not JSON objects

    def _parse_topic(self, topic: str) -> tuple[str, str] | None:
        parts = topic.split("/")
        head = self.prefix.split("/")
        if len(parts) != len(head) + 3 or parts[: len(head)] != head or parts[len(head)] != "node":
            return None
        node, kind = parts[len(head) + 1], parts[len(head) + 2]
        return (node, kind) if kind in ("status", "delta", "events") and node else None

    def _seen_at(self, payload: dict, now: float) -> float:
        ts = payload.get("ts")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts <= now + CLOCK_SKEW_S:
            return float(ts)  # a retained snapshot was heard when it was sent, not when we subscribed
        return now

    def apply(self, topic: str, payload: bytes | str | dict, now: float) -> str | None:
        """Fold one message into the table. Returns the node id it changed, or None if ignored."""
        where = self._parse_topic(topic)
        if where is None:
            self.ignored += 1
            return None
        node, kind = where
        if isinstance(payload, (bytes, str)):
            if len(payload) > MAX_PAYLOAD:
                self.ignored += 1
                return None
            try:
                payload = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                self.ignored += 1
                return None
        if not isinstance(payload, dict) or payload.get("node", node) != node:
            self.ignored += 1
            return None
        row = self.nodes.setdefault(node, NodeRow(node))
        if kind == "status":
            self._apply_status(row, payload, now)
        elif kind == "delta":
            row.status = apply_delta(row.status, payload)
            row.online, row.reason = True, None  # a delta is proof of life
            row.last_seen = max(row.last_seen or 0, self._seen_at(payload, now))
        else:
            self._apply_event(row, payload, now)
        return node

    def _apply_status(self, row: NodeRow, payload: dict, now: float) -> None:
        if payload.get("birth") is not None:
            row.birth = payload["birth"]
        if payload.get("online") is False:
            row.online, row.reason = False, payload.get("reason") or "lost"
            if "ts" in payload:
                row.last_seen = self._seen_at(payload, now)
            return
        row.status = dict(payload)
        row.online, row.reason = True, None
        row.last_seen = self._seen_at(payload, now)

    def _apply_event(self, row: NodeRow, payload: dict, now: float) -> None:
        row.last_event = payload.get("type") or payload.get("kind")
        row.last_seen = max(row.last_seen or 0, self._seen_at(payload, now))
        alarm = (payload.get("data") or {}).get("alarm")
        if not isinstance(alarm, str):
            return
        alarms = set(row.status.get("alarms") or [])
        if payload.get("type") == "alarm_raised":
            alarms.add(alarm)
        elif payload.get("type") == "alarm_cleared":
            alarms.discard(alarm)
        row.status["alarms"] = sorted(alarms)

    def row_dict(self, row: NodeRow, now: float) -> dict:
        net = row.status.get("net") or {}
        return {
            "node": row.node,
            "state": row.state(now, self.stale_after_s),
            "reason": row.reason,
            "age_s": None if row.last_seen is None else round(now - row.last_seen),
            "birth": row.birth,
            "op": net.get("op"),
            "act": net.get("act"),
            "rssi": net.get("rssi"),
            "rsrp": net.get("rsrp"),
            "temp": row.status.get("temp"),
            "play": (row.status.get("play") or {}).get("state"),
            "ver": row.status.get("ver"),
            "update": update_summary(row.status.get("sw")),
            "alarms": list(row.status.get("alarms") or []),
            "last_event": row.last_event,
        }

    def rows(self, now: float) -> list[dict]:
        return [self.row_dict(self.nodes[name], now) for name in sorted(self.nodes)]

    def render(self, now: float, width: int = 100) -> str:
        rows = self.rows(now)
        online = sum(1 for r in rows if r["state"] == "online")
        lines = [
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}  nodes {len(rows)}  online {online}"
            f"  not online {len(rows) - online}",
            f"{'NODE':<12} {'STATE':<8} {'SEEN':>5} {'BIRTH':>6} {'VERSION':<16} {'OPERATOR':<12} {'RSSI':>5} "
            f"{'RSRP':>5} {'TEMP':>5} {'PLAY':<8} ALARMS",
        ]

        def cell(value, fmt=""):
            return "-" if value is None else format(value, fmt)

        for r in rows:
            operator = (r["op"] or "-") + (f"/{r['act']}" if r["act"] else "")
            version = (r["ver"] or "-") + (f" {r['update']}" if r["update"] else "")
            lines.append(
                f"{r['node']:<12.12} {r['state']:<8} {_age(r['age_s']):>5} {cell(r['birth']):>6} "
                f"{version:<16.16} {operator:<12.12} {cell(r['rssi']):>5} {cell(r['rsrp']):>5} "
                f"{cell(r['temp'], '.0f'):>5} "
                f"{cell(r['play']):<8} {','.join(r['alarms']) or '-'}"
            )
        return "\n".join(line[:width] for line in lines)


# -- the MQTT edge -------------------------------------------------------------------------------------


def read_workspace(directory: Path) -> tuple[str, int, str]:
    """(host, port, topic_prefix) from DIR/district.toml; raises ValueError with a plain message."""
    path = directory / "district.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} not found: is {directory} a district workspace (speaker-district init)?")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}")
    broker = data.get("broker", "127.0.0.1:8883")  # the same default as provisioning.district.workspace
    if isinstance(broker, dict):
        broker = f"{broker.get('host', '')}:{broker.get('port', 8883)}"
    prefix = data.get("topic_prefix", "spk")
    host, port = parse_broker(str(broker)) if broker else ("", 0)
    if not host:
        raise ValueError(f"{path}: no 'broker = \"host:port\"' entry")
    return host, port, str(prefix)


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text.strip("[]"), 8883
    return host.strip("[]"), int(port)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="speaker-district watch", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="district workspace (speaker-district init)")
    parser.add_argument("--broker", help="HOST:PORT, overriding district.toml")
    parser.add_argument("--json", action="store_true", help="one JSON line per update instead of a table")
    parser.add_argument("--identity", default="district",
                        help="client certificate DIR/tls/IDENTITY.{crt,key}: district, or the read-only monitor")
    parser.add_argument("--once", type=float, metavar="SECONDS",
                        help="collect for SECONDS, print the final table as one JSON array, exit")
    parser.add_argument("--stale", type=float, default=STALE_AFTER_S, metavar="SECONDS",
                        help="show a node as silent after this long without a message "
                        f"(default {STALE_AFTER_S:g})")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    tls = args.dir / "tls"
    try:
        host, port, prefix = read_workspace(args.dir)
        if args.broker:
            host, port = parse_broker(args.broker)
        missing = [name for name in ("ca.crt", f"{args.identity}.crt", f"{args.identity}.key")
                   if not (tls / name).is_file()]
        if missing:
            raise ValueError(f"missing in {tls}: {', '.join(missing)} (speaker-district init creates them)")
    except ValueError as exc:
        print(f"speaker-district watch: {exc}", file=sys.stderr)
        return 2

    import paho.mqtt.client as mqtt

    table = NodeTable(prefix, args.stale)
    state = {"connected": False, "error": None}

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            state["error"] = f"broker refused the connection: {reason_code}"
            return
        state["connected"] = True
        client.subscribe([(f"{prefix}/node/+/status", 1), (f"{prefix}/node/+/delta", 0),
                          (f"{prefix}/node/+/events", 1)])

    def on_disconnect(_client, _userdata, _flags, _reason_code, _properties):
        state["connected"] = False

    def on_message(_client, _userdata, message):
        node = table.apply(message.topic, message.payload, time.time())
        if node and args.json and args.once is None:
            print(json.dumps(table.row_dict(table.nodes[node], time.time()), ensure_ascii=False), flush=True)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=mqtt_client_id(args.identity, f"watch-{os.getpid()}"), protocol=mqtt.MQTTv5)
    client.on_connect, client.on_disconnect, client.on_message = on_connect, on_disconnect, on_message
    try:
        client.tls_set(ca_certs=str(tls / "ca.crt"), certfile=str(tls / f"{args.identity}.crt"),
                       keyfile=str(tls / f"{args.identity}.key"))
        client.connect(host, port, keepalive=60)
    except (OSError, ValueError) as exc:
        print(f"speaker-district watch: cannot connect to {host}:{port}: {exc}", file=sys.stderr)
        return 1

    deadline = None if args.once is None else time.monotonic() + args.once
    next_draw, backoff = 0.0, 1.0
    try:
        while deadline is None or time.monotonic() < deadline:
            if state["error"]:
                print(f"speaker-district watch: {state['error']}", file=sys.stderr)
                return 1
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                time.sleep(min(backoff, 30))
                backoff = min(backoff * 2, 30)
                try:
                    client.reconnect()
                    backoff = 1.0
                except OSError:
                    pass
                continue
            if not args.json and args.once is None and time.monotonic() >= next_draw:
                next_draw = time.monotonic() + 1
                link = "" if state["connected"] else "  (not connected to the broker)"
                width = os.get_terminal_size().columns if sys.stdout.isatty() else 100
                sys.stdout.write("\x1b[2J\x1b[H" + table.render(time.time(), width) + link + "\n")
                sys.stdout.flush()
    finally:
        client.disconnect()
    print(json.dumps(table.rows(time.time()), ensure_ascii=False))
    return 0
