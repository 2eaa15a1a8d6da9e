"""`speaker-district serve DIR` runs the collector duty: a real process, a real broker, a real node identity."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from support import Probe, node_tls, wait_until

from node.reporting.outbox import make_event
from node.trust.ack import verify_ack
from provisioning.district.serve_dir import export_serve_dir
from provisioning.district.workspace import Workspace

NODE = "27787-02"
ROOT = Path(__file__).resolve().parent.parent


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_serve_stores_node_records_and_acknowledges_them_until_sigterm(district_ws, fresh_broker, tmp_path):
    db = tmp_path / "records.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    online = tmp_path / "serve"     # what the district server holds (no offline key: serve refuses those)
    export_serve_dir(district_ws, online)
    serve = subprocess.Popen([sys.executable, "-m", "provisioning.district", "serve", str(online), "--only",
                              "collector", "--broker", fresh_broker.address, "--db", str(db)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    node = Probe(fresh_broker, node_tls(district_ws, NODE), NODE, subscribe=[f"spk/node/{NODE}/ack"])
    try:
        lines = []
        while not any("running collector" in line for line in lines):  # after the duty's own log lines
            line = serve.stdout.readline()
            assert line, "serve exited: " + "".join(lines)
            lines.append(line)
        events = [make_event(NODE, "test", {"n": n}) for n in range(3)]
        trust = Workspace.load(district_ws).trust

        def all_acked():  # re-sent until acknowledged, as the node's outbox does
            acked = set()
            for _, payload, _ in node.seen:
                acked.update(verify_ack(payload, trust, NODE))
            missing = [e for e in events if e["id"] not in acked]
            for e in missing:
                node.publish(f"spk/node/{NODE}/events", json.dumps(e))
            return not missing

        wait_until(all_acked, timeout=30, interval=1.0)
        assert stored(db) == 3
    finally:
        node.close()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(15) == 0
