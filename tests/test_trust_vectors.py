"""Every protocol test vector in tests/vectors/ gives the decision it documents (and the files are fresh)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from node.trust.durations import parse_time
from node.trust.trustdoc import load_trust_file
from node.trust.verifier import verify_command

VECTORS = Path(__file__).parent / "vectors"
CASES = sorted(VECTORS.glob("[0-9][0-9]-*.json"))


def _generator():
    if "speaker_trust_vectors" not in sys.modules:
        spec = importlib.util.spec_from_file_location("speaker_trust_vectors", VECTORS / "make_vectors.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["speaker_trust_vectors"] = module
        spec.loader.exec_module(module)
    return sys.modules["speaker_trust_vectors"]


def test_there_are_at_least_twenty_vectors():
    assert len(CASES) >= 20


def test_vector_files_match_the_generator():
    wanted = _generator().files()
    on_disk = {str(p.relative_to(VECTORS)): p.read_bytes() for p in [*VECTORS.glob("*.json"),
                                                                       *VECTORS.glob("time/*.json")]}
    assert on_disk == wanted, "run: .venv/bin/python tests/vectors/make_vectors.py"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_vector_decision(path):
    vector = json.loads(path.read_text(encoding="utf-8"))
    ctx = vector["context"]
    trust = load_trust_file(VECTORS / "trust.json")
    decision = verify_command(
        vector["envelope"].encode("utf-8"), trust=trust, node_id=ctx["node_id"], groups=ctx["groups"],
        topic=ctx["topic"], now=parse_time(ctx["now"]) if ctx["now"] else None, seen=set(ctx["seen"]),
        versions=ctx["versions"],
        reset_epoch=parse_time(ctx["reset_epoch"]) if ctx.get("reset_epoch") else None,
    )
    expected = vector["expected"]
    assert decision.decision == expected["decision"], (vector["description"], decision)
    assert getattr(decision, "reason", None) == expected["reason"], (vector["description"], decision)
    if expected["decision"] != "accepted":
        # What the `rejected` event names: the authenticated id (or null) and the digest of the bytes.
        assert decision.command_id == expected["command_id"], (vector["description"], decision)
        assert decision.envelope_sha256 == expected["envelope_sha256"], (vector["description"], decision)
