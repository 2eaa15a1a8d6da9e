"""Benchmark command latency: a signed EMERGENCY play published on the broker -> amplifier relay on, and
-> first decoded sample in the output (real libVLC writing WAV), for a clip already in the cache.

    .venv/bin/python benchmarks/bench_latency.py            # 200 runs
    .venv/bin/python benchmarks/bench_latency.py --quick    # 20 runs (CI)

The node runs in this process (node.wiring.build_app with the real MqttBroker over mutual TLS to a real
Mosquitto, the real VlcPlayer in WAV mode, gpiozero's MockFactory, its loop on a thread), so the
benchmark and the node share one monotonic clock. The district simulator signs each command (two
emergency signatures) before the clock starts; t0 is taken just before the PUBLISH leaves. Relay on =
the amplifier's entry in RelayBoard.history; first sample = the item's WAV file first growing past its
44-byte header (polled every ~1 ms from a thread of this process). Relay timings are shortened
(warm-up 0.05 s, tail 0.05 s, idle hold 0, min off 0) so that each run starts with the relays off:
after each run a signed stop-all is sent and the benchmark waits for the amplifier to go off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    InProcessNode,
    command_line,
    first_growth,
    machine_line,
    median,
    ms,
    node_toml,
    ntp_flag,
    percentile,
    start_broker,
    tone_wav,
    verdict,
)

from node.playback.relays import AMPLIFIER  # noqa: E402
from provisioning.district import signing  # noqa: E402
from provisioning.district.box import DistrictInABox  # noqa: E402
from provisioning.district.simulator import DistrictSimulator  # noqa: E402

WARMUP_S = 0.05
GOAL_RELAY_P99_S = 0.050
GOAL_SAMPLE_OVER_WARMUP_S = 0.150


def amp_edge(history, since: float, on: bool, start: int = 0) -> float | None:
    for t, name, state in history[start:]:
        if name == AMPLIFIER and state is on and t >= since:
            return t
    return None


def wait(predicate, timeout: float, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(interval)
    return None


def slow(samples: list[float], limit: float = 0.020) -> str:
    return f"{sum(1 for s in samples if s > limit)} of {len(samples)}"


def measure(tmp: Path, runs: int, broker_conf: str) -> tuple[list[float], list[float], int]:
    """(publish -> relay on, publish -> first sample, runs with no result), seconds."""
    relay: list[float] = []
    sample: list[float] = []
    missing = 0
    box = DistrictInABox(tmp)
    node = sim = None
    try:
        box.create()
        ident = box.add_node("27787", "760", "75", 1)
        broker = start_broker(box, broker_conf)
        ident.config.write_text(node_toml(
            ident.node_dir, ident.node_id, ident.groups, [broker.address], ident.state_dir,
            keepalive=60, warmup=WARMUP_S, tail=0.05, idle_hold=0, min_off=0, modem=False,
            ntp_file=ntp_flag(tmp)))
        clip = tone_wav(tmp / "siren.wav", 0.5)
        fields = signing.content_fields(clip)
        content_id = "bench-siren"
        node = InProcessNode(ident.config, prepare=lambda app: app.cache.import_file(
            clip, fields["sha256"], fields["length"], content_id, "wav"))
        node.wait_connected()
        sim = DistrictSimulator(box.workspace, broker.address)
        history = node.app.relays.history
        wav_dir = Path(node.cfg.audio.wav_dir)
        body = {"content_id": content_id, "level": "emergency", "url": None, **fields, "volume": None,
                "start_at": None, "zones": None}
        topic = sim.ws.topic_for(ident.node_id)
        time.sleep(0.5)  # let the start-up heartbeat and outbox traffic pass
        for _ in range(runs):
            command = sim.command("play", body, [ident.node_id])
            envelope = sim.sign(command)  # signing is the district's cost, not the node's: before t0
            mark = len(history)
            first = {}
            poller = threading.Thread(target=lambda: first.setdefault("t", first_growth(
                wav_dir, command["id"], time.monotonic() + 10)), daemon=True)
            poller.start()
            t0 = time.monotonic()
            sim.publish_raw(topic, envelope)
            on = wait(lambda: amp_edge(history, t0, True, mark), 10)
            poller.join(11)
            if on is None or first.get("t") is None:
                missing += 1
            else:
                relay.append(on - t0)
                sample.append(first["t"] - t0)
            sim.send("stop", {"all": True}, [ident.node_id])
            if wait(lambda: amp_edge(history, t0, False, mark), 10) is None:
                raise RuntimeError("amplifier did not switch off after stop-all")
            wait(lambda: True if node.app.onair.on is None else None, 5)
    finally:
        if sim:
            sim.close()
        if node:
            node.close()
        box.stop()
    return relay, sample, missing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_latency.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int,
                        help="timed commands per broker setting (default 200, --quick 20)")
    parser.add_argument("--quick", action="store_true", help="small counts for CI (< 60 s)")
    args = parser.parse_args(argv)
    runs = args.runs or (20 if args.quick else 200)

    results = {}
    for label, conf in (("as shipped (`set_tcp_nodelay true`)", ""),
                        ("Nagle on (`set_tcp_nodelay false`)", "set_tcp_nodelay false")):
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            results[label] = measure(Path(tmp), runs, conf)

    print(f"### Command latency: signed EMERGENCY play -> relay on / first sample ({runs} runs per row)\n")
    print(f"`{command_line('bench_latency.py', argv)}` on {machine_line()}\n")
    print(f"Warm-up used: {WARMUP_S * 1000:.0f} ms (the node switches the amplifier on, waits the warm-up, "
          "then starts the player). Two broker settings: the Mosquitto configuration as "
          "provisioning/district/broker_config.py writes it (with `set_tcp_nodelay true`), and the same "
          "with Nagle's algorithm back on at the broker (`set_tcp_nodelay false`).\n")
    print("| path | broker | p50 | p99 | max | runs > 20 ms | goal |")
    print("|---|---|---:|---:|---:|---:|---|")
    ok = True
    goal = WARMUP_S + GOAL_SAMPLE_OVER_WARMUP_S
    for label, (relay, sample, missing) in results.items():
        ok &= not missing and bool(relay)
        if not relay:
            print(f"| (no result) | {label} | | | | | |")
            continue
        r99, s99 = percentile(relay, 99), percentile(sample, 99)
        print(f"| publish -> amplifier relay on | {label} | {ms(median(relay))} | {ms(r99)} | "
              f"{ms(max(relay))} | {slow(relay)} | p99 <= {ms(GOAL_RELAY_P99_S, 0)}: "
              f"{verdict(r99 <= GOAL_RELAY_P99_S)} |")
        print(f"| publish -> first decoded sample in the WAV | {label} | {ms(median(sample))} | {ms(s99)} | "
              f"{ms(max(sample))} | | p99 <= warm-up + 150 = {ms(goal, 0)}: {verdict(s99 <= goal)} |")
        after = [s - r for s, r in zip(sample, relay)]
        print(f"| relay on -> first sample (warm-up + player start) | {label} | {ms(median(after))} | "
              f"{ms(percentile(after, 99))} | {ms(max(after))} | | |")
    print()
    for label, (_, _, missing) in results.items():
        print(f"- {label}: runs without a relay edge or WAV output within 10 s: {missing}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
