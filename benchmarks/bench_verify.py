"""Benchmark node.trust.verify_command: median microseconds per decision over N runs.

    .venv/bin/python benchmarks/bench_verify.py            # 2000 runs per case
    .venv/bin/python benchmarks/bench_verify.py --runs 500

Cases: a normal bulletin (1 signature), an emergency (2 signatures), a 40-slot schedule, a forged
signature (rejected after one Ed25519 verify), and garbage (rejected while parsing). Uses the fixed test
vector keys and trust document. Prints a markdown table for BENCHMARKS.md on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.trust.trustdoc import load_trust_file  # noqa: E402
from node.trust.verifier import verify_command  # noqa: E402


def _vectors():
    path = ROOT / "tests" / "vectors" / "make_vectors.py"
    spec = importlib.util.spec_from_file_location("speaker_trust_vectors", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["speaker_trust_vectors"] = module
    spec.loader.exec_module(module)
    return module


def cases(V) -> dict[str, bytes]:
    schedule = V.schedule_body(5)
    schedule["slots"] = [dict(schedule["slots"][0], id=f"slot-{i}") for i in range(40)]
    forged = json.loads(V.sign(V.command("play", V.play_body(), cid="bench-forged-000001"), ["bulletin"]))
    forged["signatures"][0]["sig"] = "A" * 86 + "=="
    play = V.command("play", V.play_body(), cid="bench-play-00000001")
    emergency = V.command("play", V.play_body("emergency"), cid="bench-emergency-001")
    return {
        "play normal (1 sig)": V.sign(play, ["bulletin"]),
        "play emergency (2 sigs)": V.sign(emergency, ["emergency-a", "emergency-b"]),
        "schedule, 40 slots": V.sign(V.command("schedule", schedule, cid="bench-sched-0001"), ["schedule"]),
        "forged signature": json.dumps(forged).encode(),
        "garbage": b'{"payloadType": [' + b"1," * 2000 + b"1]}",
    }


def measure(envelope: bytes, trust, V, runs: int) -> tuple[float, str]:
    kwargs = dict(trust=trust, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC, now=V.NOW, seen=set(),
                  versions={"schedule": 4, "config": 7})
    decision = verify_command(envelope, **kwargs)
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        verify_command(envelope, **kwargs)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000.0, getattr(decision, "reason", None) or "accepted"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args(argv)
    V = _vectors()
    trust = load_trust_file(V.trust_envelope())
    print(f"verify_command, median of {args.runs} runs, {platform.machine()} {platform.python_version()}, "
          f"{platform.processor() or platform.platform()}")
    print()
    print("| case | envelope bytes | decision | median µs |")
    print("|---|---:|---|---:|")
    for name, envelope in cases(V).items():
        micros, outcome = measure(envelope, trust, V, args.runs)
        print(f"| {name} | {len(envelope)} | {outcome} | {micros:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
