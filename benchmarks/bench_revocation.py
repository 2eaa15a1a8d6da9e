"""How fast revocation bites an open connection, and what the identity fence costs a connect.

The real Mosquitto from `speaker-district broker-config` (speaker_fence plugin, CRL, ACL). Each run: a
node certificate connects and subscribes to its command topic; `speaker-district revoke` runs; we time
from the call to revoke until the broker closes the connection (the fence polls the CRL once a second,
then the broker reloads and re-checks every connection). Then the time of a full TLS + MQTT connect
(CONNACK) with the fence, against the same broker config before the fence (`use_identity_as_username`,
no plugin), median of many.

    .venv/bin/python benchmarks/bench_revocation.py            # 20 revocations, 100 connects
    .venv/bin/python benchmarks/bench_revocation.py --quick    # 3 revocations, 20 connects
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import paho.mqtt.client as mqtt  # noqa: E402
from common import command_line, machine_line, median, ms, percentile  # noqa: E402
from support import make_tls_workspace  # noqa: E402

from provisioning.district import certs  # noqa: E402
from provisioning.district.localbroker import LocalBroker  # noqa: E402


def node_context(node_dir: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(node_dir / "node.crt"), str(node_dir / "node.key"))
    return ctx


def connected_client(broker: LocalBroker, ctx: ssl.SSLContext, client_id: str):
    """A connected, subscribed client and an Event set when the broker closes it."""
    closed, ready = threading.Event(), threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.on_connect = lambda cl, _u, _f, rc, _p: cl.subscribe(f"spk/node/{client_id}/cmd", 1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_disconnect = lambda *_: closed.set()
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    if not ready.wait(10):
        raise RuntimeError("no SUBACK")
    return c, closed


def time_connect(broker: LocalBroker, ctx: ssl.SSLContext, client_id: str) -> float:
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.on_connect = lambda *_: done.set()
    t0 = time.perf_counter()
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("no CONNACK")
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return elapsed


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    revocations, connects = (3, 20) if args.quick else (20, 100)
    cuts, connect_times, unfenced_times = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as tmp:
        ws = make_tls_workspace(Path(tmp) / "ws", nodes={})
        ca = ws / "tls" / "ca.crt"
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            certs.main_issue_cert([str(ws), "--node", "27787-09", "--out-dir", str(Path(tmp) / "steady")])
        broker = LocalBroker(ws, Path(tmp) / "mosquitto", nodes=None)
        broker.start()
        try:
            for run in range(revocations):
                node_dir = Path(tmp) / f"card-{run}"
                with quiet:
                    assert certs.main_issue_cert([str(ws), "--node", "27787-01", "--out-dir", str(node_dir)]) == 0
                client, closed = connected_client(broker, node_context(node_dir, ca), "27787-01")
                try:
                    t0 = time.perf_counter()
                    with quiet:
                        assert certs.main_revoke([str(ws), "--node", "27787-01"]) == 0
                    if not closed.wait(10):
                        raise RuntimeError("the revoked connection stayed open for 10 s")
                    cuts.append(time.perf_counter() - t0)
                finally:
                    client.loop_stop()
            steady = node_context(Path(tmp) / "steady", ca)
            for i in range(connects):
                connect_times.append(time_connect(broker, steady, f"27787-09:bench-{i}"))
        finally:
            broker.stop()
        unfenced = LocalBroker(ws, Path(tmp) / "unfenced", nodes=None, fenced=False)  # the config before the fence
        unfenced.start()
        try:
            for i in range(connects):
                unfenced_times.append(time_connect(unfenced, steady, f"27787-09:bench-{i}"))
        finally:
            unfenced.stop()
    print(f"`{command_line('bench_revocation.py', argv)}` — {machine_line()}")
    print()
    print("| measurement | runs | median | p90 | max |")
    print("|---|---|---|---|---|")
    print(f"| `revoke` -> the revoked card's open connection closed | {len(cuts)} | {ms(median(cuts))} | "
          f"{ms(percentile(cuts, 90))} | {ms(max(cuts))} |")
    print(f"| TLS + MQTT connect -> CONNACK through the fence | {len(connect_times)} | "
          f"{ms(median(connect_times))} | {ms(percentile(connect_times, 90))} | {ms(max(connect_times))} |")
    print(f"| the same connect, broker config before the fence | {len(unfenced_times)} | "
          f"{ms(median(unfenced_times))} | {ms(percentile(unfenced_times, 90))} | {ms(max(unfenced_times))} |")
    print()
    print(f"fenced / unfenced connect, medians: {median(connect_times) / median(unfenced_times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
