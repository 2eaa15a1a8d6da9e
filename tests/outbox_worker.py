"""Outbox worker for kill -9 tests: add events to an Outbox and publish them to a real broker.

    python tests/outbox_worker.py DB --broker HOST:PORT [--cafile CA --cert CRT --key KEY]
                                  --topic T --count N [--node NODE] [--pad BYTES]

Adds N events (each committed, then its id printed on stdout), publishing through OutboxPump with
QoS 1 (paho CallbackAPIVersion.VERSION2, MQTT v5), deleting rows only on PUBACK; then keeps going
until the outbox is empty and exits 0. `--count 0` only drains what earlier (killed) runs left.
Every payload carries `data.digest` = sha256("<id>:<n>")[:16] so a subscriber can tell a corrupt
record from a good one. Exits 3 if the broker cannot be reached within --connect-timeout seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402

from node.reporting.outbox import Outbox, OutboxPump, make_event  # noqa: E402


def digest(record_id: str, n: int) -> str:
    return hashlib.sha256(f"{record_id}:{n}".encode()).hexdigest()[:16]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="outbox_worker")
    parser.add_argument("db")
    parser.add_argument("--broker", required=True, help="HOST:PORT")
    parser.add_argument("--cafile")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--node", default="test-node")
    parser.add_argument("--pad", type=int, default=0, help="extra payload bytes per event")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--connect-timeout", type=float, default=20)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    host, _, port = args.broker.rpartition(":")
    outbox = Outbox(args.db, node_id=args.node)
    outbox.requeue_inflight()  # a previous run may have died with rows in flight

    # The broker's fence accepts a node certificate only as client id CN or CN:purpose.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{args.node}:outbox-worker-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    if args.cafile:
        client.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.key)

    def publish(payload: bytes):
        info = client.publish(args.topic, payload, qos=1)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    pump = OutboxPump(outbox, publish, window=args.window)
    client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else pump.on_connect()
    client.on_disconnect = lambda c, u, f, rc, p: pump.on_disconnect()
    client.on_publish = lambda c, u, mid, rc, p: pump.on_puback(mid, ok=not rc.is_failure)

    give_up = time.monotonic() + args.connect_timeout
    while True:
        try:
            client.connect(host, int(port), keepalive=30)
            break
        except OSError:
            if time.monotonic() > give_up:
                print("outbox_worker: broker unreachable", file=sys.stderr)
                return 3
            time.sleep(0.2)

    added = 0
    while True:
        if added < args.count and pump.connected:
            n = added
            record = make_event(args.node, "test", {"n": n, "pad": "x" * args.pad})
            record["data"]["digest"] = digest(record["id"], n)
            if outbox.add("event", record) is None:
                print("outbox_worker: outbox refused a record", file=sys.stderr)
                return 4
            print(record["id"], flush=True)  # only after the commit: printed ids must all arrive
            added += 1
        pump.pump()
        rc = client.loop(timeout=0.01)
        pump.flush()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            pump.on_disconnect()
            time.sleep(0.2)
            try:
                client.reconnect()
            except OSError:
                pass
            continue
        if added >= args.count and pump.inflight == 0 and outbox.unsent() == 0:
            break
    client.disconnect()
    outbox.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
