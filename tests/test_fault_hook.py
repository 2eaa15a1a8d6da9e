"""The tests' one kill hook (node/adapters/faults.py, SPEAKER_FAULT_KILL_AT; docs/storage.md): it kills
exactly at the chosen write, before or after it, once across restarts with a marker, and is inert when
the variable is unset (production)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.adapters import faults

ROOT = Path(__file__).resolve().parent.parent

# A child that goes through three kv writes and two labelled journal writes, printing each step.
WRITES = """
import sys
from node.adapters import faults
for n in (1, 2, 3):
    faults.reached("kv"); print("kv", n, flush=True); faults.passed("kv")
faults.reached("journal", {"onair": {"state": "warming"}}); print("warming", flush=True)
faults.passed("journal", {"onair": {"state": "warming"}})
ending = {"onair": None, "cmd:c1": None, "rec:r1": {"result": "completed"}}
faults.reached("journal", ending); print("ending", flush=True); faults.passed("journal", ending)
print("done", flush=True)
"""


def _run(env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SPEAKER_FAULT_")}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", WRITES], env=full, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("spec,printed", [
    ("kv:2", ["kv 1"]),                                  # before the second kv write
    ("kv:2:after", ["kv 1", "kv 2"]),                    # after it
    ("journal.ending", ["kv 1", "kv 2", "kv 3", "warming"]),
    ("journal.warming:after", ["kv 1", "kv 2", "kv 3", "warming"]),
    ("outbox:1,journal.ending:after", ["kv 1", "kv 2", "kv 3", "warming", "ending"]),
])
def test_kill_lands_exactly_at_the_chosen_write(spec, printed):
    res = _run({faults.ENV: spec})
    assert res.returncode == -signal.SIGKILL, res
    assert res.stdout.split("\n")[:-1] == printed
    assert "fault hook: SIGKILL" in res.stderr


def test_unset_or_unmatched_hook_lets_every_write_through():
    for env in ({}, {faults.ENV: ""}, {faults.ENV: "cache:1,journal.cleared"}):
        res = _run(env)
        assert res.returncode == 0 and res.stdout.split("\n")[-2] == "done", res


def test_marker_makes_the_kill_happen_once_across_restarts(tmp_path):
    marker = tmp_path / "killed"
    env = {faults.ENV: "kv:1", faults.MARKER_ENV: str(marker)}
    assert _run(env).returncode == -signal.SIGKILL and marker.exists()
    assert _run(env).returncode == 0  # the same environment again, as a supervisor restarts it


def test_malformed_spec_is_refused():
    for spec in ("kv:x", "kv:1:2", "kv:1:later"):
        with pytest.raises(ValueError):
            faults._parse(spec)


def test_journal_writes_are_named_after_their_on_air_transition():
    assert faults.journal_point({"onair": {"state": "sounding"}}) == "sounding"
    assert faults.journal_point({"onair": None, "cmd:c": None, "rec:r": {}}) == "ending"
    assert faults.journal_point({"rec:r": None}) == "cleared"
    assert faults.journal_point({"onair": {"state": "gap"}}) is None
