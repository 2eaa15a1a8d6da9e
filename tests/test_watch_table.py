"""`speaker-district watch`: the node table (pure) and the command against a real TLS Mosquitto."""

import json
import re
import time

import pytest

from node.reporting import heartbeat as hb
from provisioning.district import watch
from provisioning.district.localbroker import LocalBroker, free_port
from provisioning.district.watch import NodeTable

T0 = 1_764_129_000


def snapshot(node="27787-03", birth=5, seq=1, ts=T0, **changes):
    readings = {"temp": 51.0, "net": {"op": "Viettel", "act": "lte", "rssi": -71, "rsrp": -98},
                "inputs": {"door": False, "mains": True}, **changes}
    return hb.encode(hb.build_snapshot(node, birth, seq, readings, ts))


def test_snapshot_shows_node_online_with_signal_and_temperature():
    table = NodeTable()
    assert table.apply("spk/node/27787-03/status", snapshot(), T0 + 3) == "27787-03"
    (row,) = table.rows(T0 + 3)
    assert row["state"] == "online" and row["age_s"] == 3 and row["birth"] == 5
    assert (row["op"], row["rssi"], row["rsrp"], row["temp"]) == ("Viettel", -71, -98, 51.0)
    text = table.render(T0 + 3, 120)
    assert "27787-03" in text and "Viettel/lte" in text and "-71" in text


def test_will_after_snapshot_shows_offline_and_keeps_last_known_values():
    table = NodeTable()
    table.apply("spk/node/27787-03/status", snapshot(), T0)
    table.apply("spk/node/27787-03/status", hb.encode(hb.will_payload("27787-03", 5)), T0 + 100)
    (row,) = table.rows(T0 + 100)
    assert row["state"] == "offline" and row["reason"] == "lost"
    assert row["age_s"] == 100 and row["rssi"] == -71  # last heard at the snapshot, signal last known
    assert "offline" in table.render(T0 + 100)


def test_clean_shutdown_is_shown_as_stopped_not_lost():
    table = NodeTable()
    table.apply("spk/node/27787-03/status", hb.encode(hb.shutdown_payload("27787-03", 5, 9, T0)), T0 + 1)
    assert table.rows(T0 + 1)[0]["state"] == "stopped"


def test_node_that_goes_silent_without_a_will_is_shown_silent():
    table = NodeTable(stale_after_s=2250)
    table.apply("spk/node/27787-03/status", snapshot(), T0)
    assert table.rows(T0 + 2250)[0]["state"] == "online"
    assert table.rows(T0 + 2251)[0]["state"] == "silent"


def test_new_birth_after_will_brings_node_back_online():
    table = NodeTable()
    table.apply("spk/node/27787-03/status", hb.encode(hb.will_payload("27787-03", 5)), T0)
    table.apply("spk/node/27787-03/status", snapshot(birth=6, ts=T0 + 60), T0 + 60)
    (row,) = table.rows(T0 + 61)
    assert row["state"] == "online" and row["birth"] == 6


def test_delta_updates_signal_and_alarms_and_counts_as_life():
    table = NodeTable(stale_after_s=100)
    table.apply("spk/node/27787-03/status", snapshot(), T0)
    delta = {"v": 1, "node": "27787-03", "seq": 2, "ts": T0 + 90, "net": {"rssi": -95},
             "inputs": {"door": True}, "alarms": ["door_open"]}
    table.apply("spk/node/27787-03/delta", json.dumps(delta), T0 + 90)
    (row,) = table.rows(T0 + 150)
    assert row["state"] == "online" and row["rssi"] == -95 and row["op"] == "Viettel"
    assert row["alarms"] == ["door_open"]


def test_alarm_events_update_alarms_column_between_snapshots():
    table = NodeTable()
    table.apply("spk/node/27787-03/status", snapshot(), T0)
    raised = {"v": 1, "id": "01JDZ0000000000000000000AA", "node": "27787-03", "ts": T0 + 5, "kind": "event",
              "type": "alarm_raised", "data": {"alarm": "mains_lost"}}
    table.apply("spk/node/27787-03/events", json.dumps(raised), T0 + 5)
    assert table.rows(T0 + 5)[0]["alarms"] == ["mains_lost"]
    table.apply("spk/node/27787-03/events", json.dumps({**raised, "type": "alarm_cleared"}), T0 + 9)
    assert table.rows(T0 + 9)[0]["alarms"] == []


@pytest.mark.parametrize("topic, payload", [
    ("spk/node/27787-03/status", b"{not json"),
    ("spk/node/27787-03/status", b"[1, 2]"),
    ("spk/node/27787-03/status", snapshot(node="other-node")),  # claims to be someone else
    ("spk/node/27787-03/cmd", snapshot()),
    ("other/node/27787-03/status", snapshot()),
    ("spk/node/27787-03/status", b" " * (watch.MAX_PAYLOAD + 1)),
])
def test_garbage_and_foreign_messages_are_ignored(topic, payload):
    table = NodeTable()
    assert table.apply(topic, payload, T0) is None
    assert table.nodes == {} and table.ignored == 1


def test_retained_status_age_comes_from_its_timestamp_not_arrival():
    table = NodeTable()
    table.apply("spk/node/27787-03/status", snapshot(ts=T0), T0 + 600)  # retained, 10 min old
    assert table.rows(T0 + 600)[0]["age_s"] == 600
    table.apply("spk/node/27787-04/status", snapshot(node="27787-04", ts=T0 + 10**6), T0)  # clock ahead
    assert table.rows(T0)[1]["age_s"] == 0


def test_render_fits_width_and_sorts_nodes():
    table = NodeTable()
    for node in ("27787-12", "27787-01", "27787-05"):
        table.apply(f"spk/node/{node}/status", snapshot(node=node, temp=90, disk=1), T0)
    lines = table.render(T0, 60).splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert [line.split()[0] for line in lines[2:]] == ["27787-01", "27787-05", "27787-12"]


def test_custom_prefix():
    table = NodeTable(prefix="longan/spk")
    assert table.apply("longan/spk/node/n1/status", snapshot(node="n1"), T0) == "n1"
    assert table.apply("spk/node/n1/status", snapshot(node="n1"), T0) is None


# -- the command ------------------------------------------------------------------------------------


def test_missing_workspace_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert watch.main([str(tmp_path / "nowhere"), "--once", "1"]) == 2
    err = capsys.readouterr().err
    assert "district.toml" in err and "Traceback" not in err


def test_workspace_without_certificates_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "district.toml").write_text('broker = "127.0.0.1:8883"\n')
    assert watch.main([str(tmp_path), "--once", "1"]) == 2
    err = capsys.readouterr().err
    assert "ca.crt, district.crt, district.key" in err


@pytest.fixture
def tls_workspace(tmp_path):
    """A district workspace of its own whose district.toml names its own broker (the shipped config)."""
    from support import NODES, make_tls_workspace

    ws = make_tls_workspace(tmp_path / "ws")
    with LocalBroker(ws, tmp_path / "mosquitto", nodes=NODES) as broker:
        toml = ws / "district.toml"
        toml.write_text(re.sub(r'^broker = ".*"$', f'broker = "{broker.address}"', toml.read_text(), flags=re.M))
        yield ws, broker


def test_watch_once_reports_online_and_offline_nodes_from_a_real_broker(tls_workspace, capsys):
    """`watch --once` with the broker from district.toml: one node online, one whose will says it is lost."""
    from support import Probe, node_tls

    ws, broker = tls_workspace
    now = int(time.time())
    node1 = Probe(broker, node_tls(ws, "27787-01"), "27787-01")
    node2 = Probe(broker, node_tls(ws, "27787-02"), "27787-02")
    try:
        assert node1.publish("spk/node/27787-01/status", snapshot(node="27787-01", ts=now), retain=True)
        assert node2.publish("spk/node/27787-02/status", snapshot(node="27787-02", ts=now - 30), retain=True)
        assert node2.publish("spk/node/27787-02/status", hb.encode(hb.will_payload("27787-02", 5)), retain=True)
    finally:
        node1.close()
        node2.close()

    assert watch.main([str(ws), "--once", "1.5"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_node = {row["node"]: row for row in rows}
    assert by_node["27787-01"]["state"] == "online" and by_node["27787-01"]["rssi"] == -71
    assert by_node["27787-02"]["state"] == "offline" and by_node["27787-02"]["reason"] == "lost"


def test_unreachable_broker_is_a_clear_error(tls_workspace, capsys):
    ws, _ = tls_workspace
    assert watch.main([str(ws), "--broker", f"127.0.0.1:{free_port()}", "--once", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect" in err and "Traceback" not in err


def test_dispatch_reaches_watch():
    from provisioning.district.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["watch", "--help"])
    assert exit_info.value.code == 0


def test_watch_sees_nodes_through_the_project_broker_and_its_acl(broker, district_ws, capsys):
    """Nodes publish with their own certificates under the shipped ACL; the district identity reads."""
    from support import Probe, node_tls

    now = int(time.time())
    node1 = Probe(broker, node_tls(district_ws, "27787-01"), "27787-01")
    node2 = Probe(broker, node_tls(district_ws, "27787-02"), "27787-02")
    try:
        assert node1.publish("spk/node/27787-01/status", snapshot(node="27787-01", ts=now), retain=True)
        will = hb.encode(hb.will_payload("27787-02", 3))
        assert node2.publish("spk/node/27787-02/status", will, retain=True)
        for identity in ("district", "monitor"):  # the dashboards' read-only identity sees the same
            assert watch.main([str(district_ws), "--broker", broker.address, "--once", "1.5",
                               "--identity", identity]) == 0
            rows = {row["node"]: row for row in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
            assert rows["27787-01"]["state"] == "online" and rows["27787-01"]["op"] == "Viettel"
            assert rows["27787-02"]["state"] == "offline"
    finally:
        for probe, node in ((node1, "27787-01"), (node2, "27787-02")):
            probe.publish(f"spk/node/{node}/status", b"", retain=True)  # leave no retained state behind
            probe.close()


def test_versions_and_a_running_update_show_in_the_table():
    table = NodeTable()
    sw = {"ver": "0.1.0", "prev": None, "state": "idle", "target": None, "result": None, "reason": None}
    table.apply("spk/node/27787-03/status", snapshot(ver="0.1.0", sw=sw), T0)
    table.apply("spk/node/27787-04/status", snapshot(node="27787-04", ver="0.1.0",
                                                     sw={**sw, "state": "trial", "target": "0.2.0"}), T0)
    table.apply("spk/node/27787-04/delta", hb.encode({"v": 1, "node": "27787-04", "seq": 2, "ts": T0 + 1,
                                                      "sw": {"state": "idle", "result": "rolled_back"}}), T0 + 1)
    rows = {r["node"]: r for r in table.rows(T0 + 2)}
    assert rows["27787-03"]["ver"] == "0.1.0" and rows["27787-03"]["update"] is None
    assert rows["27787-04"]["update"] == "!0.2.0 rolled back"
    text = table.render(T0 + 2, 140)
    assert "VERSION" in text and "0.1.0 !0.2.0 rol" in text
    assert watch.update_summary({**sw, "state": "downloading", "target": "0.2.0"}) == ">0.2.0 downloading"
