"""Benchmark idle 4G traffic: TLS bytes per keep-alive, per full heartbeat, per delta; a per-day model at
the default settings; and a measured idle run compared with the model.

    .venv/bin/python benchmarks/bench_traffic.py            # defaults, 10-minute idle run
    .venv/bin/python benchmarks/bench_traffic.py --quick    # 60 s, keep-alive 10 s, full heartbeat 30 s (CI)

A DistrictInABox node (`speaker-node run`, pty modem simulator with stable readings, no commands)
whose broker.servers points at a byte-counting loopback TCP proxy in front of the real Mosquitto. The
proxy cuts both directions into TLS records without decrypting them; a district subscriber tells which
record carried which message (status, delta, event), keep-alives are the small records with no message
around them. "Bytes" are TLS bytes on the TCP stream (TCP/IP headers and ACKs are not counted; an
estimate is printed separately). The measured run starts after the connect burst has settled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ByteCountingProxy,
    Subscriber,
    command_line,
    configure,
    machine_line,
    verdict,
    wait_startup_link_event,
)

from provisioning.district.box import DistrictInABox  # noqa: E402
from provisioning.district.demo import send_sim  # noqa: E402

DAY = 86400
GOAL_KB_DAY = 150
GOAL_OFFLINE_S = 90
TCPIP_HEADER = 52  # IPv4 20 + TCP 20 + timestamps option 12 (Linux default), per segment


class Attribution:
    """Which TLS record carried which message: records are matched to what the subscriber received."""

    def __init__(self, records, seen, node_id: str):
        self.records = records
        self.seen = [s for s in seen if s.topic.startswith(f"spk/node/{node_id}/")]
        small = Counter(r.size for r in records if r.direction == "up" and r.size <= 40)
        self.ping = small.most_common(1)[0][0] if small else None
        self.assigned: dict[int, str] = {}

    def match(self, since: float, until: float) -> list[tuple[str, int, int]]:
        """[(kind, up bytes, down bytes)] for each message published in [since, until)."""
        out = []
        index = {id(r): i for i, r in enumerate(self.records)}
        for msg in self.seen:
            if not since <= msg.t < until:
                continue
            kind = msg.topic.rsplit("/", 1)[-1]
            candidates = [r for r in self.records if r.direction == "up" and msg.t - 1.0 <= r.t <= msg.t
                          and index[id(r)] not in self.assigned and r.size != self.ping]
            if not candidates:
                continue
            up = min(candidates, key=lambda r: abs(r.size - msg.size - 40))
            self.assigned[index[id(up)]] = kind
            down = 0
            if kind in ("status", "events"):  # QoS 1: the broker's PUBACK comes back
                acks = [r for r in self.records if r.direction == "down" and r.t >= up.t
                        and index[id(r)] not in self.assigned and r.size != self.ping]
                if acks:
                    ack = min(acks, key=lambda r: r.t)
                    self.assigned[index[id(ack)]] = "puback"
                    down = ack.size
            out.append((kind, up.size, down))
        return out

    def pings(self, since: float, until: float) -> tuple[list[int], list[int]]:
        ups = [r.size for r in self.records
               if r.direction == "up" and since <= r.t < until and r.size == self.ping]
        downs = [r.size for i, r in enumerate(self.records) if r.direction == "down" and since <= r.t < until
                 and r.size == self.ping and i not in self.assigned]
        return ups, downs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_traffic.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="measured idle run (default 600, --quick 60)")
    parser.add_argument("--quick", action="store_true",
                        help="CI: 60 s run with keep-alive 10 s and full heartbeat 30 s")
    args = parser.parse_args(argv)
    duration = args.seconds or (60 if args.quick else 600)
    keepalive, full_every = (10, 30) if args.quick else (60, 900)
    modem_poll = 10 if args.quick else 60

    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp:
        box = DistrictInABox(Path(tmp))
        sub = proxy = None
        try:
            box.create()
            node = box.add_node("27787", "760", "75", 1)
            broker = box.start_broker()
            proxy = ByteCountingProxy(broker.address)
            configure(node, [proxy.address], keepalive=keepalive, heartbeat_full=full_every, modem=True,
                      modem_poll=modem_poll)
            prefix = f"spk/node/{node.node_id}/"
            sub = Subscriber(box.workspace, broker.address, [prefix + "#"])
            started = time.monotonic()
            node.start()
            online = sub.wait_for(lambda s: s.topic == prefix + "status" and (s.obj or {}).get("online"), 60)
            wait_startup_link_event(sub, node.node_id, started, modem_poll)
            time.sleep(3)
            up0, down0, n0 = proxy.snapshot()
            t_a = time.monotonic()
            time.sleep(duration)
            up1, down1, n1 = proxy.snapshot()
            t_b = time.monotonic()
            # A delta (and the events) of a change, after the idle window: the door opens and closes.
            send_sim(node, {"input": "door", "active": True})
            sub.wait_for(lambda s: s.topic == prefix + "delta" and s.t > t_b, 15)
            time.sleep(1.5)
            t_c = time.monotonic()
            codes = node.terminate()
            connections = proxy.connections
        finally:
            box.stop()
            if sub:
                sub.close()
            if proxy:
                proxy.close()

    att = Attribution(list(proxy.records), list(sub.seen), node.node_id)
    connect_msgs = att.match(online.t - 0.5, online.t + 0.01)
    window_msgs = att.match(t_a, t_b)
    change_msgs = att.match(t_b, t_c)
    ping_up, ping_down = att.pings(t_a, t_b)
    ping_pair = att.ping * 2
    fulls = [u + d for k, u, d in connect_msgs + window_msgs if k == "status"]
    full_pair = statistics.median(fulls)
    deltas = [u for k, u, _ in change_msgs + window_msgs if k == "delta"]
    delta = statistics.median(deltas) if deltas else float("nan")
    events = [u + d for k, u, d in change_msgs if k == "events"]

    # Model. paho sends PINGREQ a keep-alive after the last bytes came in; a full heartbeat is due at
    # the same moment as a keep-alive (900 s is a multiple of 60 s, and the heartbeat ticks every 5 s
    # after it is due), so it does not save one: one keep-alive per keep-alive interval.
    day_pings, day_fulls = DAY / 60, DAY / 900
    model_day = day_pings * ping_pair + day_fulls * full_pair
    segments_day = day_pings * 3 + day_fulls * 3  # two records + one bare ACK per exchange
    # The measured window: full heartbeats due at connect + i*P inside it.
    due_fulls = sum(1 for i in range(1, 10_000) if t_a <= online.t + i * full_every < t_b)
    model_pings = round((t_b - t_a) / keepalive)
    w_kinds = Counter(k for k, _, _ in window_msgs)
    w_delta_bytes = sum(u for k, u, _ in window_msgs if k == "delta")
    w_event_bytes = sum(u + d for k, u, d in window_msgs if k == "events")
    model_run = model_pings * ping_pair + due_fulls * full_pair + w_delta_bytes + w_event_bytes
    measured = (up1 - up0) + (down1 - down0)
    ratio = measured / model_run if model_run else float("nan")

    print("### Idle 4G traffic (TLS bytes through a counting proxy)\n")
    print(f"`{command_line('bench_traffic.py', argv)}` on {machine_line()}\n")
    print("| unit | up B | down B | total B |")
    print("|---|---:|---:|---:|")
    print(f"| keep-alive: PINGREQ + PINGRESP | {att.ping} | {att.ping} | {ping_pair} |")
    status_up = statistics.median([u for k, u, d in connect_msgs + window_msgs if k == "status"])
    status_down = statistics.median([d for k, u, d in connect_msgs + window_msgs if k == "status"])
    print(f"| full heartbeat: status publish (QoS 1, retained) + PUBACK ({len(fulls)} seen) | "
          f"{status_up:.0f} | {status_down:.0f} | {full_pair:.0f} |")
    print(f"| delta (QoS 0, no PUBACK; door opened) | {delta:.0f} | 0 | {delta:.0f} |")
    if events:
        print(f"| event (QoS 1) + PUBACK, e.g. alarm_raised | | | {statistics.median(events):.0f} |")
    print()
    print("Model per day at the defaults (broker.keepalive = 60 s, health.heartbeat_full = 15 min, deltas "
          "only on change, none at idle):\n")
    print("| item | per day | bytes/day |")
    print("|---|---:|---:|")
    print(f"| keep-alives (one a minute) | {day_pings:.0f} | {day_pings * ping_pair:,.0f} |")
    print(f"| full heartbeats | {day_fulls:.0f} | {day_fulls * full_pair:,.0f} |")
    print(f"| **total TLS bytes** | | **{model_day:,.0f} (= {model_day / 1000:.0f} kB/day)** |")
    print()
    print(f"- goal <= {GOAL_KB_DAY} kB/day (TLS bytes): {verdict(model_day / 1000 <= GOAL_KB_DAY)}; "
          f"offline detection 1.5 x keep-alive = {1.5 * 60:.0f} s (goal <= {GOAL_OFFLINE_S} s): "
          f"{verdict(1.5 * 60 <= GOAL_OFFLINE_S)}")
    print(f"- not counted above (estimate, not measured): TCP/IP headers, {TCPIP_HEADER} B per segment, "
          f"about 3 segments per exchange: +{segments_day * TCPIP_HEADER / 1000:.0f} kB/day on the air")
    print()
    scaling = "" if not args.quick else (f" (scaled down for CI: keep-alive {keepalive} s instead of 60, "
                                         f"full heartbeat {full_every} s instead of 900, modem poll "
                                         f"{modem_poll} s instead of 60)")
    print(f"Measured idle run: {t_b - t_a:.0f} s{scaling}, starting {t_a - online.t:.0f} s after the node "
          f"came online (after its one-off start-up `link_restored` event); {connections} TCP connection(s) "
          "through the proxy.\n")
    print("| | keep-alives | full heartbeats | deltas | events | bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| model | {model_pings} | {due_fulls} | {w_kinds['delta']} (as seen) | "
          f"{w_kinds['events']} (as seen) | {model_run:,.0f} |")
    print(f"| measured | {min(len(ping_up), len(ping_down))} | {w_kinds['status']} | {w_kinds['delta']} | "
          f"{w_kinds['events']} | {measured:,} |")
    print()
    print(f"- measured / model: **{ratio:.3f}** (goal within 10 %: {verdict(abs(ratio - 1) <= 0.10)})")
    if w_kinds["delta"]:
        fields = Counter(key for s in sub.seen if s.topic.endswith("/delta") and t_a <= s.t < t_b
                         for key in (s.obj or {}) if key not in ("v", "node", "seq", "ts"))
        print(f"- deltas in the idle window carried: {dict(fields)} (readings of this shared machine that "
              "moved past their deadband; a quiet node sends none)")
    if w_kinds["events"]:
        types = Counter((s.obj or {}).get("type") for s in sub.seen if s.topic.endswith("/events")
                        and t_a <= s.t < t_b)
        print(f"- events in the idle window: {dict(types)}")
    per_day = measured * DAY / (t_b - t_a)
    print(f"- measured, extrapolated to a day{' (at the scaled settings)' if args.quick else ''}: "
          f"{per_day / 1000:.0f} kB/day")
    print(f"- node exit codes: {codes}")
    return 0 if abs(ratio - 1) <= 0.10 or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
