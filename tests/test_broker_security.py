"""The shipped broker config and ACL, against a real Mosquitto: mTLS is required and a node can only
speak for itself."""

from __future__ import annotations

import ssl

import pytest
from support import Probe, district_probe, node_tls, try_connect

from provisioning.district.broker_config import render_acl


def _ctx(ws, cert=None, key=None, ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca or ws / "tls" / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _connect_fails(broker, ctx, client_id="intruder") -> bool:
    return not try_connect(broker, ctx, client_id)


def test_client_without_certificate_is_refused(broker, district_ws):
    assert _connect_fails(broker, _ctx(district_ws))


def test_client_with_certificate_from_another_ca_is_refused(broker, district_ws):
    odd = district_ws / "odd"
    assert _connect_fails(broker, _ctx(district_ws, odd / "foreign.crt", odd / "foreign.key"))


def test_expired_node_certificate_is_refused(broker, district_ws):
    odd = district_ws / "odd"
    assert _connect_fails(broker, _ctx(district_ws, odd / "expired.crt", odd / "expired.key"))


def test_valid_node_certificate_is_accepted(broker, district_ws):
    probe = Probe(broker, node_tls(district_ws, "27787-01"), "27787-01")
    assert not probe.reason.is_failure
    probe.close()


def test_node_cannot_publish_under_another_nodes_topics(broker, district_ws):
    watcher = district_probe(broker, district_ws, client_id="acl-watcher")
    intruder = Probe(broker, node_tls(district_ws, "27787-02"), "27787-02")
    try:
        intruder.publish("spk/node/27787-01/status", b'{"online": true, "forged": true}', retain=True)
        intruder.publish("spk/node/27787-01/events", b'{"forged": true}')
        intruder.publish("spk/node/27787-02/events", b'{"own": true}')
        topic, obj = watcher.wait_for(lambda t, o: o and (o.get("own") or o.get("forged")))
        assert topic == "spk/node/27787-02/events" and obj == {"own": True}
        assert not any(b"forged" in p for _, p, _ in watcher.seen)
    finally:
        intruder.close()
        watcher.close()


def test_node_cannot_send_commands(broker, district_ws):
    """A stolen node certificate must not reach other nodes' command topics at all."""
    target = Probe(broker, node_tls(district_ws, "27787-01"), "27787-01",
                   subscribe=["spk/node/27787-01/cmd", "spk/group/c27787/cmd", "spk/group/all/cmd"])
    intruder = Probe(broker, node_tls(district_ws, "27788-01"), "27788-01")
    try:
        for topic in ("spk/node/27787-01/cmd", "spk/group/c27787/cmd", "spk/group/all/cmd"):
            intruder.publish(topic, b"forged")
        district = district_probe(broker, district_ws, subscribe=(), client_id="acl-district")
        district.publish("spk/node/27787-01/cmd", b'{"marker": 1}')
        target.wait_for(lambda t, o: o == {"marker": 1})
        assert [p for _, p, _ in target.seen] == [b'{"marker": 1}']
        district.close()
    finally:
        intruder.close()
        target.close()


def test_node_reads_only_its_own_groups_commands(broker, district_ws):
    other = Probe(broker, node_tls(district_ws, "27788-01"), "27788-01",
                  subscribe=["spk/group/c27787/cmd", "spk/node/27787-01/cmd", "spk/group/c27788/cmd"])
    district = district_probe(broker, district_ws, subscribe=(), client_id="acl-district-2")
    try:
        district.publish("spk/group/c27787/cmd", b'{"for": "c27787"}')
        district.publish("spk/node/27787-01/cmd", b'{"for": "27787-01"}')
        district.publish("spk/group/c27788/cmd", b'{"for": "c27788"}')
        other.wait_for(lambda t, o: o == {"for": "c27788"})
        assert [p for _, p, _ in other.seen] == [b'{"for": "c27788"}']
    finally:
        district.close()
        other.close()


def test_acl_lists_each_nodes_groups_and_nothing_else():
    acl = render_acl("spk", {"27787-03": ["c27787", "d760", "p75", "all"]})
    section = acl.split("user 27787-03")[1].strip().splitlines()
    assert section == ["topic read spk/group/c27787/cmd", "topic read spk/group/d760/cmd",
                       "topic read spk/group/p75/cmd"]
    assert "pattern read spk/node/%u/cmd" in acl
    assert "pattern write spk/node/%u/status" in acl


@pytest.mark.parametrize("identity", ["district"])
def test_district_identity_can_read_status(broker, district_ws, identity):
    node = Probe(broker, node_tls(district_ws, "27787-02"), "27787-02:status-probe")
    watcher = district_probe(broker, district_ws, client_id="status-reader")
    try:
        node.publish("spk/node/27787-02/status", b'{"probe": 2}', retain=False)
        watcher.wait_for(lambda t, o: o == {"probe": 2})
    finally:
        node.close()
        watcher.close()
