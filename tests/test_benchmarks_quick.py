"""The benchmark scripts still run end to end (`--quick`, CI size) and print a table with numbers.

No timing is asserted here: the numbers are for BENCHMARKS.md, not for pass/fail. What is proved is that
each script drives the real district-in-a-box to the end, exits 0 and leaves no process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["bench_startup.py", "bench_latency.py", "bench_sync_start.py", "bench_traffic.py",
           "bench_resources.py", "bench_update.py", "bench_revocation.py", "bench_fleet.py",
           "bench_flood.py", "bench_floor_writes.py"]
NUMBER_ROW = re.compile(r"^\|(?!\s*-).*\d")


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (the benchmark's temporary directory)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def _network_namespaces() -> set[str]:
    """Named network namespaces (bench_traffic.py creates one per run and must delete it)."""
    directory = Path("/run/netns")
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_quick_run_prints_a_table_of_numbers(script):
    if script == "bench_traffic.py" and os.geteuid() != 0:
        pytest.skip("bench_traffic.py captures on a veth pair in a network namespace it creates: needs root")
    # A short private TMPDIR: simulated nodes bind Unix sockets under it (sun_path is 108 bytes at most),
    # and any process still naming it afterwards was left running by the benchmark.
    tmp = tempfile.mkdtemp(prefix="bq-")
    namespaces_before = _network_namespaces()
    try:
        env = dict(os.environ, TMPDIR=tmp, PYTHONUNBUFFERED="1")
        result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=580)
        leftovers = _processes_mentioning(tmp)
        leftovers += [f"network namespace {n}" for n in _network_namespaces() - namespaces_before]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = result.stdout
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{out}\n{result.stderr[-3000:]}"
    assert f"benchmarks/{script} --quick" in out, "the snippet must show the command that produced it"
    rows = [line for line in out.splitlines() if NUMBER_ROW.match(line)]
    assert rows, f"no table row with numbers in:\n{out}"
    assert not re.search(r"\bnan\b", " ".join(rows), re.IGNORECASE), f"a measurement is missing:\n{out}"
    assert leftovers == [], f"a benchmark left processes running: {leftovers}"
