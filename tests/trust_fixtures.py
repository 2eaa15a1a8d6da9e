"""Shared setup for the trust tests: the vector generator (tests/vectors/make_vectors.py) loaded once as a
module, and the provisioned trust document it signs."""

import importlib.util
import sys
from pathlib import Path

from node.trust.trustdoc import load_trust_file

_MODULE = "speaker_trust_vectors"


def load_vectors():
    # make_vectors.py is a script, not a package module; register it under one name so every test file
    # (and its keys) shares a single instance.
    if _MODULE not in sys.modules:
        path = Path(__file__).parent / "vectors" / "make_vectors.py"
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[_MODULE]


V = load_vectors()
TRUST = load_trust_file(V.trust_envelope())
