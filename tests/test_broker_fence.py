"""The broker's identity fence against a stolen certificate, on the real Mosquitto with the shipped config
(`speaker-district broker-config`: the speaker_fence plugin, the CRL, the generated ACL).

The attacker holds one district certificate (a node's, or the monitor's) and asks for another identity's
client id, once or over and over; or holds a certificate that the district then revokes."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from support import Probe, connack_code, node_tls, wait_until

from provisioning.district import certs
from provisioning.district.localbroker import FENCE_LOADED, LocalBroker, client_tls

NOT_AUTHORIZED = 135
TELEGRAF_CLIENT_IDS = re.findall(r'^\s*client_id = "([^"]+)"', (Path(__file__).resolve().parent.parent / "docs" /
                                "dashboard" / "telegraf.conf").read_text(), re.M)


def session(broker, ctx, client_id: str, topics=()) -> Probe:
    """A persistent MQTT v5 session (clean start off, one hour expiry) like a node's or the collector's,
    recording what it receives and how often its connection was closed."""
    return Probe(broker, ctx, client_id, topics, session_expiry=3600)


attempt = connack_code


def publish_all(broker, ws, topic: str, payloads: list[bytes]) -> None:
    district = session(broker, client_tls(ws, "district"), "district:test-sender")
    try:
        for p in payloads:
            assert district.client.publish(topic, p, qos=1).wait_for_publish(5) is None
    finally:
        district.close()


@pytest.fixture
def b_offline_with_queued_commands(fresh_broker, district_ws):
    """Node B (27787-02) has a persistent session subscribed to its command topic, is offline, and the
    district has queued five commands for it."""
    b = session(fresh_broker, node_tls(district_ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    b.close()
    commands = [f"command {i}".encode() for i in range(5)]
    publish_all(fresh_broker, district_ws, "spk/node/27787-02/cmd", commands)
    return commands


def test_stolen_certificate_cannot_take_over_another_nodes_session(fresh_broker, district_ws,
                                                                     b_offline_with_queued_commands):
    stolen = node_tls(district_ws, "27787-01")  # node A's card
    for wanted in ("27787-02", "27787-02:selftest", "27787-02:x"):
        assert attempt(fresh_broker, stolen, wanted) == NOT_AUTHORIZED, wanted
    # MQTT 3.1.1 CONNACK 5 "not authorised" (paho reports it as the v5 code)
    assert attempt(fresh_broker, stolen, "27787-02", mqtt311=True) == NOT_AUTHORIZED
    # MQTT 5 enhanced authentication is another way into CONNECT; no plugin offers a method, so it is
    # refused too (0x8C bad authentication method) rather than skipping the fence.
    assert attempt(fresh_broker, stolen, "27787-02", auth_method="SCRAM-SHA-1") == 0x8C
    b = session(fresh_broker, node_tls(district_ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    try:
        assert b.reason.value == 0
        assert b.drain(5) == b_offline_with_queued_commands  # all five queued commands reach B, in order
    finally:
        b.close()


def test_stolen_monitor_certificate_cannot_take_over_a_nodes_session(fresh_broker, district_ws,
                                                                     b_offline_with_queued_commands):
    assert attempt(fresh_broker, client_tls(district_ws, "monitor"), "27787-02") == NOT_AUTHORIZED
    b = session(fresh_broker, node_tls(district_ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    try:
        assert b.drain(5) == b_offline_with_queued_commands
    finally:
        b.close()


@pytest.mark.parametrize("victim,ctx_identity", [
    *[(cid, "monitor") for cid in TELEGRAF_CLIENT_IDS],  # the dashboard's inputs (docs/dashboard/telegraf.conf)
    ("district", "district"),                            # the district service's session
    ("district:collector", "district"),
])
def test_stolen_certificate_cannot_take_over_the_dashboard_or_district_session(
        fresh_broker, district_ws, victim, ctx_identity):
    owner = session(fresh_broker, client_tls(district_ws, ctx_identity), victim, ["spk/node/+/events"])
    owner.close()
    node = session(fresh_broker, node_tls(district_ws, "27787-01"), "27787-01")
    events = [f'{{"id": "e{i}"}}'.encode() for i in range(5)]
    try:
        for e in events:
            assert node.client.publish("spk/node/27787-01/events", e, qos=1).wait_for_publish(5) is None
    finally:
        node.close()
    thieves = [node_tls(district_ws, "27787-02"),
               client_tls(district_ws, "district" if ctx_identity == "monitor" else "monitor")]
    for ctx in thieves:
        assert attempt(fresh_broker, ctx, victim) == NOT_AUTHORIZED
    owner = session(fresh_broker, client_tls(district_ws, ctx_identity), victim, ["spk/node/+/events"])
    try:
        assert owner.drain(5) == events  # none swallowed by a thief
    finally:
        owner.close()


def test_thief_retaking_repeatedly_does_not_disconnect_the_node_or_make_it_miss_commands(fresh_broker, district_ws):
    b = session(fresh_broker, node_tls(district_ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    stolen = node_tls(district_ws, "27787-01")
    refused, stop = [], threading.Event()

    def thief():
        while not stop.is_set():
            refused.append(attempt(fresh_broker, stolen, "27787-02"))

    t = threading.Thread(target=thief)
    t.start()
    try:
        commands = [f"play {i}".encode() for i in range(20)]
        district = session(fresh_broker, client_tls(district_ws, "district"), "district:test-sender")
        for c in commands:
            district.client.publish("spk/node/27787-02/cmd", c, qos=1).wait_for_publish(5)
            time.sleep(0.1)  # the scenario: commands spread over the thief's attempts, not one burst
        district.close()
        assert b.drain(20) == commands
    finally:
        stop.set()
        t.join(30)
        b.close()
    assert len(refused) >= 3 and set(refused) == {NOT_AUTHORIZED}
    assert b.disconnects == 1  # only our own close at the end: the thief never pushed B off


def test_each_identity_may_use_its_own_client_ids(fresh_broker, district_ws):
    for ctx, client_id in [(node_tls(district_ws, "27787-01"), "27787-01"),
                           (node_tls(district_ws, "27787-01"), "27787-01:selftest"),
                           (client_tls(district_ws, "monitor"), "monitor:telegraf-ioc-1"),
                           (client_tls(district_ws, "district"), "district"),
                           (client_tls(district_ws, "district"), "district:send-1a2b")]:
        assert attempt(fresh_broker, ctx, client_id) == 0, client_id
    for ctx, client_id in [(node_tls(district_ws, "27787-01"), "27787-01x"),      # a prefix is not enough
                           (node_tls(district_ws, "27787-01"), "27787-01:"),      # an empty purpose
                           (client_tls(district_ws, "district"), "district-send"),
                           (client_tls(district_ws, "district"), "monitor")]:
        assert attempt(fresh_broker, ctx, client_id) == NOT_AUTHORIZED, client_id


# --- revocation -------------------------------------------------------------------------------------

@pytest.fixture
def revocable(tmp_path):
    """A district of its own whose node certificates are issued (and so can be revoked) through the
    registry, with its broker from `broker-config` (ACL from the registry, CRL watched by the fence)."""
    from support import make_tls_workspace

    ws = make_tls_workspace(tmp_path / "ws", nodes={})
    for node_id in ("27787-01", "27787-02"):
        assert certs.main_issue_cert([str(ws), "--node", node_id, "--out-dir", str(ws / "nodes" / node_id)]) == 0
    broker = LocalBroker(ws, tmp_path / "mosquitto", nodes=None)
    broker.start()
    yield ws, broker
    broker.stop()


def test_revoked_certificate_loses_its_open_connection_within_seconds(revocable):
    ws, broker = revocable
    a = session(broker, node_tls(ws, "27787-01"), "27787-01",
                ["spk/node/27787-01/cmd", "spk/group/all/cmd", "spk/group/c27787/cmd"])
    a.client.reconnect_delay_set(1, 1)  # the thief keeps trying to come back
    other = session(broker, node_tls(ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    try:
        publish_all(broker, ws, "spk/node/27787-01/cmd", [b"before"])
        assert a.drain(1) == [b"before"]
        revoked_at = time.monotonic()
        assert certs.main_revoke([str(ws), "--node", "27787-01", "--reason", "keyCompromise"]) == 0
        wait_until(lambda: a.disconnects >= 1, timeout=10)
        cut_after = time.monotonic() - revoked_at
        print(f"revoked connection cut after {cut_after:.2f} s")
        assert cut_after < 5, f"the open connection was cut only after {cut_after:.1f} s"
        publish_all(broker, ws, "spk/node/27787-01/cmd", [b"after"])
        publish_all(broker, ws, "spk/group/all/cmd", [b"group after"])
        publish_all(broker, ws, "spk/node/27787-02/cmd", [b"for the other node"])
        assert other.drain(1) == [b"for the other node"]  # the reload did not touch the other node
        # two of the thief's reconnect attempts (every second), refused by the listener's reloaded CRL
        wait_until(lambda: broker.log_count("certificate verify failed") >= 2, timeout=10)
        assert a.messages.empty()
        assert not a.client.is_connected()
        assert other.disconnects == 0
        assert refused(broker, node_tls(ws, "27787-01"), "27787-01")
    finally:
        a.close()
        other.close()
    assert "speaker_fence: refused 27787-01 (client id '27787-01'): certificate revoked" in broker.log_tail(200)


def refused(broker, ctx, client_id: str) -> bool:
    """True if the broker refuses the connection: a failed CONNACK, or a TLS handshake the listener's CRL
    rejects (then paho sees a reset or no CONNACK)."""
    return attempt(broker, ctx, client_id) != 0


def test_revoked_certificate_is_refused_on_new_connections(revocable):
    ws, broker = revocable
    assert attempt(broker, node_tls(ws, "27787-01"), "27787-01") == 0
    assert certs.main_revoke([str(ws), "--node", "27787-01"]) == 0
    wait_until(lambda: refused(broker, node_tls(ws, "27787-01"), "27787-01"), timeout=10)
    assert attempt(broker, node_tls(ws, "27787-02"), "27787-02") == 0


# --- the shipped config ------------------------------------------------------------------------------

def test_broker_config_builds_the_fence_and_never_uses_identity_as_username(tmp_path):
    """`speaker-district broker-config` compiles the plugin (gcc + mosquitto-dev, .ci/setup) next to the
    config; `use_identity_as_username` would bypass it (Mosquitto calls no plugin for such clients)."""
    from support import make_tls_workspace

    from provisioning.district import broker_config

    ws = make_tls_workspace(tmp_path / "ws", nodes={})
    (ws / "tls" / "crl.pem").unlink(missing_ok=True)
    assert broker_config.main([str(ws), "-o", str(tmp_path / "out")]) == 0
    conf = (tmp_path / "out" / "mosquitto.conf").read_text()
    plugin = tmp_path / "out" / "speaker_fence.so"
    assert plugin.read_bytes()[:4] == b"\x7fELF" and plugin.stat().st_mode & 0o044 == 0o044
    assert f"plugin {plugin}" in conf and f"plugin_opt_crlfile {ws / 'tls' / 'crl.pem'}" in conf
    assert f"crlfile {ws / 'tls' / 'crl.pem'}" in conf and (ws / "tls" / "crl.pem").exists()
    assert "use_identity_as_username" not in conf.replace("`use_identity_as_username` must stay off", "")
    assert TELEGRAF_CLIENT_IDS and all(cid.startswith("monitor:") for cid in TELEGRAF_CLIENT_IDS)


def test_missing_compiler_or_headers_is_a_clear_error(tmp_path, monkeypatch):
    from provisioning.district import fence_plugin

    monkeypatch.setattr(fence_plugin, "HEADERS", ("/nonexistent/mosquitto_broker.h",))
    with pytest.raises(fence_plugin.FenceBuildError, match="apt-get install gcc mosquitto-dev"):
        fence_plugin.build_plugin(tmp_path / "cache")


def test_replaced_card_loses_its_connection_and_the_new_card_connects(revocable, tmp_path):
    """A new SD card for the same pole (`issue-cert --replace`) revokes the old certificate as superseded:
    a thief holding the old card is cut off, the new card (same CN, same client id) is not."""
    ws, broker = revocable
    old_card = session(broker, node_tls(ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    old_ctx = node_tls(ws, "27787-02")
    try:
        new_dir = tmp_path / "new-card"
        assert certs.main_issue_cert([str(ws), "--node", "27787-02", "--out-dir", str(new_dir), "--replace"]) == 0
        wait_until(lambda: old_card.disconnects >= 1, timeout=10)
        import ssl

        new_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        new_ctx.load_verify_locations(cafile=str(ws / "tls" / "ca.crt"))
        new_ctx.load_cert_chain(str(new_dir / "node.crt"), str(new_dir / "node.key"))
        new_card = session(broker, new_ctx, "27787-02", ["spk/node/27787-02/cmd"])
        try:
            publish_all(broker, ws, "spk/node/27787-02/cmd", [b"for the new card"])
            assert new_card.drain(1) == [b"for the new card"]
            assert old_card.messages.empty()
            assert refused(broker, old_ctx, "27787-02:selftest")
        finally:
            new_card.close()
    finally:
        old_card.close()


def test_revocation_reload_keeps_other_nodes_queued_commands(revocable):
    """The broker reload that cuts a revoked card re-checks every session, offline ones too: the offline
    node's queued commands must survive it."""
    ws, broker = revocable
    b = session(broker, node_tls(ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    b.close()
    queued = [f"queued {i}".encode() for i in range(5)]
    publish_all(broker, ws, "spk/node/27787-02/cmd", queued)
    loads = broker.log_count(FENCE_LOADED)
    assert certs.main_revoke([str(ws), "--node", "27787-01"]) == 0
    broker.wait_reloaded(loads)  # the fence saw the new CRL and the broker's reload is over
    assert "changed, reloading" in broker.log_tail(50)
    b = session(broker, node_tls(ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    try:
        assert b.drain(5) == queued
    finally:
        b.close()


def test_thief_retaking_the_session_does_not_make_a_real_node_miss_plays(district_ws, broker, tmp_path, python_exe):
    """The real daemon as node B on the shared broker, a thief with node A's card asking for B's client id
    in a loop the whole time: every bulletin sent meanwhile is played and recorded once."""
    from audio_fixtures import tone_wav
    from support import NodeProcess, district_probe, write_node_config

    from provisioning.district.content_server import ContentServer
    from provisioning.district.simulator import DistrictSimulator

    node_id = "27788-01"  # a node no other test runs on the shared broker
    content = ContentServer(district_ws, tmp_path / "content").start()
    sim = DistrictSimulator(district_ws, broker.address)
    watcher = district_probe(broker, district_ws, client_id=f"fence-watch-{time.monotonic_ns()}")
    node = NodeProcess(write_node_config(tmp_path / "node.toml", district_ws, node_id, [broker.address]), python_exe)
    refused_codes, stop = [], threading.Event()

    def thief():
        while not stop.is_set():
            refused_codes.append(attempt(broker, node_tls(district_ws, "27787-01"), node_id))

    try:
        watcher.wait_for(lambda t, o: t == f"spk/node/{node_id}/status" and o and o.get("online") is True, 20)
        seen_before = len(watcher.seen)
        t = threading.Thread(target=thief)
        t.start()
        for i in range(3):
            audio = tone_wav(tmp_path / f"tone-{i}.wav", seconds=0.5)
            body = sim.play_body(audio, content.publish(audio), level="priority", content_id=f"fence-{i}")
            sim.send("play", body, [node_id])
            _, record = watcher.wait_for(lambda t, o: t.endswith(f"{node_id}/events") and o
                                         and o.get("kind") == "play" and o.get("content_id") == f"fence-{i}", 30)
            assert record["result"] == "completed", record
        stop.set()
        t.join(30)
        assert len(refused_codes) >= 3 and set(refused_codes) == {NOT_AUTHORIZED}
        offline = [o for tp, p, _ in watcher.seen[seen_before:] if tp == f"spk/node/{node_id}/status"
                   for o in [json.loads(p)] if o.get("online") is False]
        assert offline == [], "the node was pushed off its session (its will was published)"
    finally:
        stop.set()
        assert node.terminate() == 0
        node.close()
        watcher.close()
        sim.close()
        content.stop()


def test_revoked_dashboard_certificate_loses_its_open_connection_and_the_reissued_one_connects(revocable):
    """A stolen dashboard (monitor) certificate: `revoke --identity monitor --reissue` cuts the open
    connection, refuses the old certificate and leaves a new one that connects."""
    ws, broker = revocable
    old_ctx = client_tls(ws, "monitor")  # loaded now: the files are replaced below
    dashboard = session(broker, old_ctx, "monitor:telegraf-ioc-1", ["spk/node/+/status"])
    try:
        assert certs.main_revoke([str(ws), "--identity", "monitor", "--reissue", "--reason", "keyCompromise"]) == 0
        wait_until(lambda: dashboard.disconnects >= 1, timeout=10)
        assert refused(broker, old_ctx, "monitor:telegraf-ioc-1")
        assert attempt(broker, client_tls(ws, "monitor"), "monitor:telegraf-ioc-1") == 0
        assert attempt(broker, client_tls(ws, "district"), "district") == 0  # the district is not disturbed
    finally:
        dashboard.close()
    assert (ws / "tls" / "old").is_dir() and list((ws / "tls" / "old").glob("monitor-*.crt"))


def test_revoke_refuses_an_unknown_identity_and_reissue_without_identity(revocable, capsys):
    ws, _ = revocable
    with pytest.raises(SystemExit):  # argparse: not a district client identity
        certs.main_revoke([str(ws), "--identity", "broker"])
    with pytest.raises(SystemExit):
        certs.main_revoke([str(ws), "--node", "27787-01", "--reissue"])
    with pytest.raises(certs.ConfigError, match="identity must be one of district, district-serve, monitor"):
        certs.revoke_identity(ws, "27787-01")
    assert not (ws / "tls" / "old").exists()  # nothing was revoked or moved


def test_half_written_crl_does_not_cut_the_district_off(revocable):
    """An operator copying the CRL with a plain cp: while the file is half written, nobody is cut off;
    once a complete CRL is in place, the revoked card is."""
    ws, broker = revocable
    a = session(broker, node_tls(ws, "27787-01"), "27787-01", ["spk/node/27787-01/cmd"])
    b = session(broker, node_tls(ws, "27787-02"), "27787-02", ["spk/node/27787-02/cmd"])
    crl = ws / "tls" / "crl.pem"
    try:
        text = crl.read_bytes()
        with open(crl, "wb") as half:  # not atomic, on purpose
            half.write(text[: len(text) // 2])
        wait_until(lambda: "not a complete PEM CRL yet" in broker.log_tail(20), timeout=10)
        # The fence polls once a second and logs nothing when it finds the file unchanged: no event says
        # "polled again and did nothing", so this window of one more poll is the check.
        time.sleep(1.5)
        assert a.disconnects == 0 and b.disconnects == 0
        assert attempt(broker, node_tls(ws, "27787-02"), "27787-02:selftest") == 0
        assert certs.main_revoke([str(ws), "--node", "27787-01"]) == 0  # a complete CRL again
        wait_until(lambda: a.disconnects >= 1, timeout=10)
        publish_all(broker, ws, "spk/node/27787-02/cmd", [b"still here"])
        assert b.drain(1) == [b"still here"] and b.disconnects == 0
    finally:
        a.close()
        b.close()
