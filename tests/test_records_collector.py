"""The district collector against a real Mosquitto (TLS, shipped ACL) and real databases: SQLite and a
PostgreSQL 15 cluster the tests start themselves. Signed acknowledgements verified the node's way."""

from __future__ import annotations

import json
import time

import pytest
from support import NODES, Probe, node_tls, wait_until

from node.errors import RemoteDataError
from node.reporting.outbox import make_event
from node.trust import reasons
from node.trust.ack import encode_ack_body, verify_ack
from node.trust.envelope import PAYLOAD_ACK, sign_envelope
from node.trust.trustdoc import load_trust_file
from provisioning.district.collector import Collector, parse_message
from provisioning.district.localbroker import client_tls
from provisioning.district.records_store import SCHEMA_VERSION, Incoming, RecordStore
from provisioning.district.workspace import Workspace

NODE = "27787-01"


@pytest.fixture(scope="module")
def pg():
    from pg_server import PgServer

    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = RecordStore(str(tmp_path / "records.db"))
    else:
        s = RecordStore(request.getfixturevalue("pg").new_database())
    yield s
    s.close()


def play(node=NODE, n=0, **extra):
    return {"v": 1, "id": f"01PLAYRECORD{n:014d}", "node": node, "ts": 1_764_129_000 + n, "kind": "play",
            "content_id": "ban-tin", "sha256": "ab" * 32, "level": "normal", "source": "command",
            "result": "completed", "seconds": 12.5, "started_at": 1_764_129_000.0 + n, **extra}


def incoming(payload, kind=None):
    return Incoming(kind or payload["kind"], payload["node"], "b1", time.time(), payload, json.dumps(payload))


def test_store_keeps_each_record_id_exactly_once(store):
    first, dup = store.store_batch([incoming(play(n=1)), incoming(play(n=2)), incoming(play(n=1))])
    assert len(first) == 2 and len(dup) == 1
    again_new, again_dup = store.store_batch([incoming(play(n=2)), incoming(play(n=3))])
    assert [m.payload["id"] for m in again_new] == [play(n=3)["id"]] and len(again_dup) == 1
    assert store.count() == 3
    rows = store.records(node=NODE, kind="play")
    assert [r["seconds"] for r in rows] == [12.5] * 3 and rows[0]["content_id"] == "ban-tin"


def test_store_migrations_are_versioned_and_run_once(store):
    assert store.schema_version() == SCHEMA_VERSION
    store.store_batch([incoming(play(n=1))])
    assert store.migrate() == SCHEMA_VERSION  # a second start: nothing re-created, nothing lost
    assert store.count() == 1


def test_store_refuses_a_newer_schema_instead_of_guessing(tmp_path):
    from provisioning.district.records_store import StoreError

    s = RecordStore(str(tmp_path / "r.db"))
    s._db.execute("INSERT INTO schema_version (version) VALUES (99)")
    s.close()
    with pytest.raises(StoreError, match="schema version 99"):
        RecordStore(str(tmp_path / "r.db"))


def test_message_from_another_nodes_topic_is_refused():
    assert parse_message("spk/node/27787-02/events", json.dumps(play()).encode(), "spk", "b", 0) == "wrong_node"
    assert parse_message(f"spk/node/{NODE}/events", b"\xff", "spk", "b", 0) == "malformed"
    assert parse_message(f"spk/node/{NODE}/events", json.dumps(play(id="x")).encode(), "spk", "b", 0) == "malformed"
    assert isinstance(parse_message(f"spk/node/{NODE}/events", json.dumps(play()).encode(), "spk", "b", 0), Incoming)


# --- acknowledgements: what the node accepts -----------------------------------------------------

def test_ack_signed_by_the_collector_key_verifies(district_ws):
    ws = Workspace.load(district_ws)
    envelope = sign_envelope(PAYLOAD_ACK, encode_ack_body(NODE, ["01AAAAAAAAAAAAAAAAAAAAAAAA"]), [ws.key("collector")])
    assert verify_ack(envelope, ws.trust, NODE) == ["01AAAAAAAAAAAAAAAAAAAAAAAA"]


@pytest.mark.parametrize("signer, node, reason", [
    ("bulletin", NODE, reasons.ROLE_NOT_ALLOWED),  # a real district key, but not one that may acknowledge
    ("collector", "27787-02", reasons.WRONG_TARGET),  # an ack for another node, replayed to this one
])
def test_ack_by_a_key_without_the_ack_role_or_for_another_node_is_refused(district_ws, signer, node, reason):
    ws = Workspace.load(district_ws)
    envelope = sign_envelope(PAYLOAD_ACK, encode_ack_body(node, ["01AAAAAAAAAAAAAAAAAAAAAAAA"]), [ws.key(signer)])
    with pytest.raises(RemoteDataError) as err:
        verify_ack(envelope, ws.trust, NODE)
    assert err.value.reason == reason


def test_forged_ack_signature_is_refused(district_ws):
    ws = Workspace.load(district_ws)
    envelope = json.loads(sign_envelope(PAYLOAD_ACK, encode_ack_body(NODE, ["01AAAAAAAAAAAAAAAAAAAAAAAA"]),
                                        [ws.key("collector")]))
    import base64

    envelope["payload"] = base64.b64encode(encode_ack_body(NODE, ["01BBBBBBBBBBBBBBBBBBBBBBBB"])).decode()
    with pytest.raises(RemoteDataError) as err:
        verify_ack(json.dumps(envelope).encode(), ws.trust, NODE)
    assert err.value.reason == reasons.BAD_SIGNATURE


def test_ack_vectors_verify_as_documented():
    """tests/vectors/ack-*.json: what another implementation must reproduce (docs/protocol.md 9b)."""
    from pathlib import Path

    vectors = Path(__file__).parent / "vectors"
    trust = load_trust_file(vectors / "trust.json")
    cases = sorted(vectors.glob("ack-*.json"))
    assert len(cases) >= 3
    for path in cases:
        case = json.loads(path.read_text())
        try:
            got = {"decision": "accepted", "ids": verify_ack(case["envelope"].encode(), trust, case["node"])}
        except RemoteDataError as exc:
            got = {"decision": "rejected", "reason": exc.reason}
        assert got == case["expected"], path.name


# --- the collector with a real broker --------------------------------------------------------------

def collector_for(district_ws, store, servers, **kw):
    ws = Workspace.load(district_ws)
    return Collector(store, servers, client_tls(district_ws, "district"), ws.key("collector"),
                     client_id=f"district:collector-{time.monotonic_ns()}", **kw)


def test_collector_stores_once_and_the_node_gets_a_signed_ack(district_ws, broker, store):
    node = Probe(broker, node_tls(district_ws, NODE), NODE, subscribe=[f"spk/node/{NODE}/ack"])
    collector = collector_for(district_ws, store, [broker.address]).start()
    try:
        assert collector.wait_connected()
        events = [make_event(NODE, "test", {"n": n}) for n in range(5)]
        for e in events + events[:2]:  # two re-sent: a lost acknowledgement
            assert node.publish(f"spk/node/{NODE}/events", json.dumps(e))
        trust = Workspace.load(district_ws).trust
        acked: set[str] = set()

        def all_acked():
            for _, payload, _ in node.seen:
                acked.update(verify_ack(payload, trust, NODE))
            return acked >= {e["id"] for e in events}

        wait_until(all_acked, timeout=15)
        wait_until(lambda: collector.stats.duplicates == 2, timeout=10)
        assert store.count() == 5
        assert {r["id"] for r in store.records(node=NODE)} == {e["id"] for e in events}
    finally:
        collector.stop()
        node.close()


def test_node_identity_cannot_publish_acks_for_another_node(district_ws, broker):
    victim = Probe(broker, node_tls(district_ws, NODE), NODE, subscribe=[f"spk/node/{NODE}/ack"])
    other = next(n for n in NODES if n != NODE)
    attacker = Probe(broker, node_tls(district_ws, other), other)
    try:
        attacker.publish(f"spk/node/{NODE}/ack", b'{"forged": true}')
        district = Probe(broker, client_tls(district_ws, "district"), f"district:t{time.monotonic_ns()}")
        district.publish(f"spk/node/{NODE}/ack", b'{"marker": true}')
        wait_until(lambda: any(b"marker" in p for _, p, _ in victim.seen), timeout=10)
        assert not any(b"forged" in p for _, p, _ in victim.seen)  # the ACL dropped it
        district.close()
    finally:
        attacker.close()
        victim.close()


def test_collector_keeps_messages_unacknowledged_while_the_database_is_down(district_ws, broker, tmp_path):
    """PUBACK to the broker only after the commit: a store that fails leaves the batch in our session."""
    store = RecordStore(str(tmp_path / "r.db"))
    real = store.store_batch
    failures = {"left": 3}

    def flaky(messages):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk unplugged")
        return real(messages)

    store.store_batch = flaky
    node = Probe(broker, node_tls(district_ws, NODE), NODE, subscribe=[f"spk/node/{NODE}/ack"])
    collector = collector_for(district_ws, store, [broker.address]).start()
    try:
        assert collector.wait_connected()
        e = make_event(NODE, "test", {"n": 1})
        node.publish(f"spk/node/{NODE}/events", json.dumps(e))
        wait_until(lambda: store.count() == 1, timeout=20)
        assert collector.stats.store_errors == 3
        wait_until(lambda: any(p.startswith(b"{\"payloadType\"") for _, p, _ in node.seen), timeout=10)
    finally:
        collector.stop()
        node.close()
        store.close()


def test_collector_duty_reads_every_broker_of_the_district(district_ws, broker, fresh_broker, tmp_path):
    from provisioning.district.collector import CollectorDuty

    duty = CollectorDuty(district_ws, db=str(tmp_path / "r.db"), brokers=[broker.address, fresh_broker.address],
                         client_id=f"district:collector-{time.monotonic_ns()}")  # not another test's session
    duty.start()
    try:
        assert duty.collector.wait_connected(15)
        for b, n in ((broker, 1), (fresh_broker, 2)):  # a node on each side of a failover
            probe = Probe(b, node_tls(district_ws, NODE), f"{NODE}:t{n}")
            probe.publish(f"spk/node/{NODE}/events", json.dumps(make_event(NODE, "test", {"n": n})))
            probe.close()
        wait_until(lambda: duty.store.count() == 2, timeout=15)
        assert {r["broker"] for r in duty.store.records()} == {broker.address, fresh_broker.address}
    finally:
        duty.stop()


def test_workspace_lists_every_broker_or_falls_back_to_the_one(tmp_path):
    ws = Workspace(tmp_path, {"broker": "a:1"}, None)
    assert ws.brokers == ["a:1"]
    ws = Workspace(tmp_path, {"broker": "a:1", "brokers": ["a:1", "b:2"]}, None)
    assert ws.brokers == ["a:1", "b:2"]
