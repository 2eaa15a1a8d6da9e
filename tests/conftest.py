"""Session fixtures: a throwaway district (CA, broker and client certificates) and a real Mosquitto 2
with TLS and the project's own ACL, on a free loopback port; stopped after the session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

# A handler exception in the node's loop fails the test (node/loop.py): strict in this process and in
# every daemon the tests start (they inherit the environment). Tests of the production behaviour
# (report handler_failed, keep running) construct their loop with strict=False.
os.environ.setdefault("SPEAKER_NODE_STRICT_LOOP", "1")

from support import NODES, make_tls_workspace  # noqa: E402

from provisioning.district.localbroker import LocalBroker  # noqa: E402


def pytest_configure(config):
    # Settings live here rather than in a pytest.ini, keeping the top level to the project's fixed layout.
    config.addinivalue_line("markers", "slow: long runs (kill -9 cycles, fuzzing, benchmarks); run with -m slow")
    if not config.option.markexpr:
        config.option.markexpr = "not slow"     # the default suite; CI runs `-m slow` separately
    if getattr(config.option, "timeout", None) in (None, 0):
        config.option.timeout = 300             # pytest-timeout: no test may hang CI
    config.option.strict_markers = True


@pytest.fixture(scope="session")
def district_ws(tmp_path_factory) -> Path:
    return make_tls_workspace(tmp_path_factory.mktemp("district"))


@pytest.fixture(scope="session")
def broker(district_ws, tmp_path_factory):
    b = LocalBroker(district_ws, tmp_path_factory.mktemp("mosquitto"), nodes=NODES)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(district_ws, tmp_path):
    """A broker of the test's own, for tests that stop or restart it."""
    b = LocalBroker(district_ws, tmp_path / "mosquitto", nodes=NODES)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def python_exe() -> str:
    return os.environ.get("SPEAKER_PYTHON", sys.executable)
