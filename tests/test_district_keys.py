"""Least privilege for the always-online district service (issue 9 review, item 8).

An intruder on the district server gets whatever `speaker-district serve` holds. Attacks: the time key
also signing schedules and config; the root, emergency, release and CA private keys sitting in the
directory serve runs from. Safe: the online keys are `time` (role time only) and `collector` (ack
only); `serve-dir` exports nothing else; serve refuses to run beside an offline key; and a serve run
from the export still answers time and collects records through a real Mosquitto."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import Probe, node_tls, wait_until

from node.reporting.outbox import make_event
from node.trust.ack import verify_ack
from node.trust.envelope import parse_envelope
from node.trust.keys import keyid_of_key, load_private_pem
from node.trust.timeanswer import SignedTime, request_body, verify_time_answer
from node.trust.trustdoc import load_trust_file, verify_trust_update
from provisioning import pki
from provisioning.district import send
from provisioning.district import workspace as workspace_module
from provisioning.district.serve import EX_CONFIG
from provisioning.district.serve_dir import MANIFEST, export_serve_dir, offline_keys
from provisioning.district.timeservice import time_keys
from provisioning.district.workspace import ONLINE_ROLES, Workspace, WorkspaceError, bump_trust, init_workspace

ROOT = Path(__file__).resolve().parent.parent
NODE = "27787-02"
PEM_PRIVATE = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)


def spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def every_private_key(directory: Path) -> list[tuple[Path, object]]:
    """(file, key) for every PEM private key block in every file under DIRECTORY, whatever its name."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        for block in PEM_PRIVATE.finditer(path.read_bytes()):
            found.append((path, serialization.load_pem_private_key(block.group(0), password=None)))
    return found


def serve(directory: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "provisioning.district", "serve", str(directory), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"))


@pytest.fixture
def exported(district_ws, tmp_path) -> Path:
    out = tmp_path / "serve"
    export_serve_dir(district_ws, out)
    return out


def test_time_service_signs_with_a_key_that_holds_only_the_time_role(district_ws):
    # The time duty runs online all the time (speaker-district serve), so its key is the one an attacker
    # who breaks into the district server gets first. The collector got a key of its own ("ack") for that.
    workspace = Workspace.load(district_ws)
    trust = load_trust_file(district_ws / "trust.json")

    roles = {role for key in time_keys(workspace) for role in trust.keys[keyid_of_key(key)].roles}
    # Safe: the online time key cannot sign schedules or remote config (or anything but time answers).
    assert roles == {"time"}, f"the time service's key also holds {sorted(roles - {'time'})}"


def test_no_offline_key_holds_an_online_role_and_no_online_key_an_offline_one(district_ws):
    trust = Workspace.load(district_ws).trust
    holders = {role: sorted(k.name for k in trust.keys.values() if role in k.roles) for role in ONLINE_ROLES}
    assert holders == {"time": ["time"], "ack": ["collector"]}
    assert trust.key_named("time").roles == {"time"} and trust.key_named("collector").roles == {"ack"}
    assert trust.key_named("schedule").roles == {"schedule", "config"}


def test_serve_dir_export_holds_no_offline_private_key(district_ws, exported):
    ws = Workspace.load(district_ws)
    online = {keyid_of_key(ws.key("time")), keyid_of_key(ws.key("collector"))}
    every_id = {keyid_of_key(load_private_pem(p.read_bytes())) for p in (district_ws / "keys").glob("*.key")}
    offline_ids = every_id - online
    assert len(offline_ids) == 8        # root-1, bulletin, emergency-a/-b, schedule, live, release-a/-b
    serve_tls = pki.load_cert(exported / "tls" / "district-serve.crt").public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    signing, tls = set(), []
    for path, key in every_private_key(exported):
        if isinstance(key, Ed25519PrivateKey):
            signing.add(keyid_of_key(key))
        else:
            tls.append((path.relative_to(exported), spki(key)))
    assert signing == online and not signing & offline_ids
    # only its own TLS identity: not the CA key, nor "district" (which may write commands), a node's, the broker's
    assert tls == [(Path("tls/district-serve.key"), serve_tls)]
    for other in ("ca", "district", "broker", "monitor"):
        assert spki(pki.load_private_key(district_ws / "tls" / f"{other}.key")) != serve_tls

    # Nor an offline key in any other encoding: the raw 32-byte seed, as bytes, hex or base64.
    blobs = b"".join(p.read_bytes() for p in exported.rglob("*") if p.is_file())
    for path in (district_ws / "keys").glob("*.key"):
        key = load_private_pem(path.read_bytes())
        if keyid_of_key(key) in offline_ids:
            seed = key.private_bytes_raw()
            assert seed not in blobs and seed.hex().encode() not in blobs and base64.b64encode(seed) not in blobs
    assert json.loads((exported / MANIFEST).read_text())["keys"] == {
        "collector": keyid_of_key(ws.key("collector")), "time": keyid_of_key(ws.key("time"))}
    assert offline_keys(exported) == []
    assert oct((exported / "keys" / "time.key").stat().st_mode & 0o777) == "0o600"
    assert oct(exported.stat().st_mode & 0o777) == "0o700"


def test_serve_refuses_to_run_from_a_full_workspace(district_ws):
    proc = serve(district_ws, "--broker", "127.0.0.1:9")   # refused before any connection is tried
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EX_CONFIG, out
    for named in ("root key", "'emergency-a'", "'release-b'", "'schedule'", "the district TLS CA key"):
        assert named in out, (named, out)
    assert "serve-dir" in out and "running" not in out


def test_serve_refuses_an_offline_key_hidden_under_another_name(district_ws, exported):
    # Judged by content: the root key copied in as a "backup" certificate file is found.
    (exported / "backup").mkdir()
    root = (district_ws / "keys" / "root-1.key").read_bytes()
    (exported / "backup" / "old-cert.pem").write_bytes(b"notes\n" + root)
    found = offline_keys(exported)
    assert [(f.path.relative_to(exported), f.why.split(" ")[0]) for f in found] == [
        (Path("backup/old-cert.pem"), "root")]
    proc = serve(exported, "--broker", "127.0.0.1:9")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EX_CONFIG and "old-cert.pem" in out, out


def test_serve_from_the_export_answers_time_and_collects_records(district_ws, exported, fresh_broker, tmp_path):
    ws = Workspace.load(district_ws)
    time_id, collector_id = keyid_of_key(ws.key("time")), keyid_of_key(ws.key("collector"))
    proc = serve(exported, "--broker", fresh_broker.address, "--db", str(tmp_path / "records.db"))
    node = Probe(fresh_broker, node_tls(district_ws, NODE), NODE,
                 subscribe=[f"spk/node/{NODE}/time", f"spk/node/{NODE}/ack"])
    try:
        lines = []
        while not any("running time, collector" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "serve exited: " + "".join(lines)
            lines.append(line)
        assert not any("offline private key" in line for line in lines), lines

        nonce, sent = secrets.token_hex(32), time.monotonic()
        assert node.publish(f"spk/node/{NODE}/time/req", request_body(nonce))
        topic, _ = node.wait_for(lambda t, obj: t.endswith("/time"))
        answer = verify_time_answer(next(p for t, p, _ in node.seen if t == topic), trust=ws.trust, node_id=NODE,
                                    issued={nonce: sent}, received_monotonic=time.monotonic())
        assert isinstance(answer, SignedTime) and answer.nonce == nonce, answer
        assert answer.keyids == (time_id,)

        events = [make_event(NODE, "test", {"n": n}) for n in range(3)]

        def all_acked():  # re-sent until acknowledged, as the node's outbox does
            acked, signers = set(), set()
            for t, payload, _ in node.seen:
                if t.endswith("/ack"):
                    acked.update(verify_ack(payload, ws.trust, NODE))
                    signers.update(s.keyid for s in parse_envelope(payload).signatures)
            missing = [e for e in events if e["id"] not in acked]
            for e in missing:
                node.publish(f"spk/node/{NODE}/events", json.dumps(e))
            return signers if not missing else None

        assert wait_until(all_acked, timeout=30, interval=1.0) == {collector_id}
    finally:
        node.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_a_workspace_from_before_the_time_key_migrates_with_one_trust_update(tmp_path, monkeypatch, capsys):
    # A workspace made before issue 9: no `time` key, `schedule` holding schedule + config + time.
    old_roles = dict(workspace_module.KEY_ROLES, schedule=["schedule", "config", "time"])
    del old_roles["time"]
    monkeypatch.setattr(workspace_module, "KEY_ROLES", old_roles)
    ws_dir = tmp_path / "ws"
    init_workspace(ws_dir)
    monkeypatch.undo()
    for old_file in ("district-serve.crt", "district-serve.key"):   # nor the online TLS identity
        (ws_dir / "tls" / old_file).unlink()
    v1 = load_trust_file(ws_dir / "trust.json")

    with pytest.raises(RuntimeError, match="--add-key time:time --drop-role schedule:time"):
        time_keys(Workspace.load(ws_dir))     # the broad schedule key is never used online
    with pytest.raises(WorkspaceError, match="--add-key time:time --drop-role schedule:time"):
        export_serve_dir(ws_dir, tmp_path / "serve")

    assert send.main([str(ws_dir), "trust", "--add-key", "time:time", "--drop-role", "schedule:time",
                      "--print"]) == 0
    envelope = capsys.readouterr().out.strip().encode()
    v2 = verify_trust_update(envelope, current_trust=v1, now_or_floor=v1.issued_at)  # a normal update from v1
    assert v2.version == 2
    assert v2.key_named("schedule").roles == {"schedule", "config"}
    assert v2.key_named("schedule").keyid == v1.key_named("schedule").keyid   # same key, one role fewer
    assert v2.key_named("time").roles == {"time"}
    assert [keyid_of_key(k) for k in time_keys(Workspace.load(ws_dir))] == [v2.key_named("time").keyid]
    manifest = export_serve_dir(ws_dir, tmp_path / "serve")
    assert manifest["keys"]["time"] == v2.key_named("time").keyid and manifest["tls_identity"] == "district-serve"
    # the export issued the missing certificate with the workspace's CA (offline), CN district-serve
    cert = pki.load_cert(tmp_path / "serve" / "tls" / "district-serve.crt")
    assert "CN=district-serve" in cert.subject.rfc4514_string()
    assert (ws_dir / "tls" / "district-serve.key").exists()


def test_dropping_a_role_a_key_lacks_or_its_last_role_is_refused(tmp_path):
    init_workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="does not hold time"):
        bump_trust(tmp_path / "ws", drop_roles={"schedule": ["time"]})
    with pytest.raises(WorkspaceError, match="no role; revoke it instead"):
        bump_trust(tmp_path / "ws", drop_roles={"time": ["time"]})
    assert load_trust_file(tmp_path / "ws" / "trust.json").version == 1


def test_reexport_after_rotating_the_time_key_leaves_no_old_online_key(tmp_path):
    ws_dir, out = tmp_path / "ws", tmp_path / "serve"
    init_workspace(ws_dir)
    export_serve_dir(ws_dir, out)
    old = keyid_of_key(load_private_pem((out / "keys" / "time.key").read_bytes()))
    (out / "records.db").write_bytes(b"the collector's records")
    for name in ("district.crt", "district.key"):   # as an export from before the district-serve identity had
        shutil.copy(ws_dir / "tls" / name, out / "tls" / name)
    bump_trust(ws_dir, revoke=["time"], add_keys={"time": ["time"], "spare-time": ["time"]})
    (ws_dir / "keys" / "spare-time.key").unlink()      # a key whose private half stayed elsewhere
    export_serve_dir(ws_dir, out)

    keyids = {keyid_of_key(k) for _, k in every_private_key(out) if isinstance(k, Ed25519PrivateKey)}
    trust = load_trust_file(out / "trust.json")
    assert old not in keyids and keyids == {trust.key_named("time").keyid, trust.key_named("collector").keyid}
    assert trust.version == 2 and sorted(p.name for p in (out / "keys").iterdir()) == [
        "collector.key", "collector.pub", "time.key", "time.pub"]
    assert (out / "records.db").read_bytes() == b"the collector's records"
    assert sorted(p.name for p in (out / "tls").iterdir()) == ["ca.crt", "district-serve.crt", "district-serve.key"]


def test_export_refuses_to_write_over_the_workspace_or_a_directory_that_is_not_a_serve_dir(district_ws, tmp_path):
    with pytest.raises(WorkspaceError, match="another directory"):
        export_serve_dir(district_ws, district_ws)
    shutil.copytree(district_ws, tmp_path / "copy")
    with pytest.raises(WorkspaceError, match="not a serve directory"):
        export_serve_dir(district_ws, tmp_path / "copy")
    (tmp_path / "copy" / MANIFEST).write_text("{}")
    with pytest.raises(WorkspaceError, match="holds offline keys"):
        export_serve_dir(district_ws, tmp_path / "copy")


def test_the_shipped_unit_does_not_restart_serve_into_the_same_refusal():
    from test_systemd_units import unit_settings

    settings = unit_settings("speaker-district.service")
    assert settings["RestartPreventExitStatus"] == [str(EX_CONFIG)] and EX_CONFIG == 78
    assert settings["ExecStart"] == ["/opt/speaker-district/venv/bin/speaker-district serve /var/lib/speaker-district"]


def test_the_online_identity_can_neither_send_nor_clear_a_command(district_ws, exported, fresh_broker):
    # An intruder on the serve machine holds tls/district-serve.key. The broker's ACL lets that identity
    # answer time and write acknowledgements, but no command topic: no replayed command, no retained
    # command replaced or cleared (a retained trust update an offline node still has to fetch).
    from provisioning.district.localbroker import client_tls

    node = Probe(fresh_broker, node_tls(district_ws, NODE), NODE,
                 subscribe=[f"spk/node/{NODE}/cmd", "spk/group/all/cmd", f"spk/node/{NODE}/ack"])
    intruder = Probe(fresh_broker, client_tls(exported, "district-serve"), "district-serve:intruder")
    try:
        assert intruder.reason is not None and not intruder.reason.is_failure, intruder.reason
        intruder.publish(f"spk/node/{NODE}/cmd", b'{"payloadType":"replayed"}')
        intruder.publish("spk/group/all/cmd", b"", retain=True)       # would clear a retained command
        intruder.publish("spk/group/all/cmd", b'{"payloadType":"retained"}', retain=True)
        # Negative check by an event that must come after: the marker on the ack topic (allowed) goes
        # through the same broker from the same connection, so anything let through arrives before it.
        intruder.publish(f"spk/node/{NODE}/ack", b"marker")
        node.wait_seen(lambda got: b"marker" in got)
        assert [(t, p) for t, p, _ in node.seen] == [(f"spk/node/{NODE}/ack", b"marker")]
    finally:
        intruder.close()
        node.close()


def test_a_node_event_carrying_a_private_key_does_not_stop_serve(district_ws, exported):
    # The collector stores node text in DIR/records.db. A node that puts a PEM private key into an
    # event must not make the next serve start refuse (a denial of the district's time service).
    import sqlite3

    from provisioning.district.records_store import RecordStore

    store = RecordStore.open(None, exported)
    store.close()
    pem = (district_ws / "nodes" / NODE / "node.key").read_text()
    with sqlite3.connect(exported / "records.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS planted (text TEXT)")
        db.execute("INSERT INTO planted VALUES (?)", (pem,))
    assert pem.encode() in (exported / "records.db").read_bytes() + b"".join(
        p.read_bytes() for p in exported.glob("records.db-*"))
    assert offline_keys(exported) == []
    (exported / "keys" / "planted.pem").write_text(pem)       # the same key anywhere else is found
    assert [f.path.name for f in offline_keys(exported)] == ["planted.pem"]
