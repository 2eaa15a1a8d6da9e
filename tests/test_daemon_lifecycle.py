"""The daemon against a real broker: retained status with a birth counter, Last Will on kill -9,
clean SIGTERM, reconnect after a broker restart, failover across the broker list, EX_CONFIG."""

from __future__ import annotations

import subprocess

import pytest
from support import NodeProcess, district_probe, write_node_config

NODE = "27787-01"


def _online(node, birth=None):
    return lambda t, o: (t == f"spk/node/{node}/status" and o and o.get("online") is True
                         and (birth is None or o.get("birth") == birth))


def _offline(node, reason):
    return lambda t, o: t == f"spk/node/{node}/status" and o and o.get("online") is False and o.get("reason") == reason


@pytest.fixture
def node_config(tmp_path, district_ws, broker):
    return write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address])


def test_retained_online_status_then_clean_sigterm_publishes_offline(broker, district_ws, node_config, python_exe):
    watcher = district_probe(broker, district_ws, client_id="w-sigterm")
    node = NodeProcess(node_config, python_exe)
    try:
        _, status = watcher.wait_for(_online(NODE))
        assert status["node"] == NODE and status["birth"] >= 1
        assert node.terminate() == 0
        _, off = watcher.wait_for(_offline(NODE, "shutdown"))
        assert off["birth"] == status["birth"]
    finally:
        node.close()
        watcher.close()


def test_last_will_appears_when_node_is_killed_9(broker, district_ws, node_config, python_exe):
    watcher = district_probe(broker, district_ws, client_id="w-lwt")
    node = NodeProcess(node_config, python_exe)
    try:
        _, status = watcher.wait_for(_online(NODE))
        node.kill9()
        # keepalive = 10 s: the broker declares the client dead after 1.5 x keepalive at most.
        _, will = watcher.wait_for(_offline(NODE, "lost"), timeout=25)
        assert will["birth"] == status["birth"]
    finally:
        node.close()
        watcher.close()


def test_birth_counter_increases_across_restarts(broker, district_ws, node_config, python_exe):
    watcher = district_probe(broker, district_ws, client_id="w-birth")
    births = []
    try:
        for _ in range(2):
            node = NodeProcess(node_config, python_exe)
            try:
                _, status = watcher.wait_for(_online(NODE, None if not births else births[-1] + 1))
                births.append(status["birth"])
                assert node.terminate() == 0
            finally:
                node.close()
        assert births[1] == births[0] + 1
    finally:
        watcher.close()


def test_node_reconnects_after_broker_restart(fresh_broker, district_ws, tmp_path, python_exe):
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [fresh_broker.address])
    node = NodeProcess(cfg, python_exe)
    watcher = district_probe(fresh_broker, district_ws, client_id="w-restart")
    try:
        _, first = watcher.wait_for(_online(NODE))
        watcher.close()
        fresh_broker.restart()
        watcher = district_probe(fresh_broker, district_ws, client_id="w-restart-2")
        # A status with a newer sequence number (a fresh publish, not only the retained copy).
        _, again = watcher.wait_for(lambda t, o: _online(NODE)(t, o) and o.get("seq", 0) > first.get("seq", 0),
                                    timeout=20)
        assert again["birth"] == first["birth"], "a reconnect is not a reboot"
    finally:
        node.close()
        watcher.close()


def test_failover_to_second_broker_when_first_is_down(broker, district_ws, tmp_path, python_exe):
    from provisioning.district.localbroker import free_port

    dead = f"127.0.0.1:{free_port()}"
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [dead, broker.address])
    watcher = district_probe(broker, district_ws, client_id="w-failover")
    node = NodeProcess(cfg, python_exe)
    try:
        watcher.wait_for(_online(NODE), timeout=15)
        assert node.terminate() == 0
    finally:
        node.close()
        watcher.close()


def test_bad_config_exits_78_listing_every_error(tmp_path, python_exe):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("""
[node]
id = "not-a-node"
[broker]
servers = ["nohostport"]
keepalve = 30
[audio]
default_volume = 150
[relayz]
""")
    res = subprocess.run([python_exe, "-m", "node", "run", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 78
    err = res.stderr
    assert "Traceback" not in err
    for expected in ("node.id", "broker.servers", "broker.keepalve: unknown key (did you mean 'keepalive'?)",
                     "audio.default_volume", "[relayz]: unknown section (did you mean 'relays'?)"):
        assert expected in err, (expected, err)


def test_missing_config_file_exits_78(tmp_path, python_exe):
    res = subprocess.run([python_exe, "-m", "node", "run", "--config", str(tmp_path / "none.toml")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 78 and "no such file" in res.stderr and "Traceback" not in res.stderr


def test_check_config_accepts_the_shipped_example(python_exe):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "node" / "data" / "node.example.toml"
    res = subprocess.run([python_exe, "-m", "node", "check-config", str(example)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert "27787-03" in res.stdout


def test_relative_paths_in_node_toml_are_relative_to_the_file(tmp_path):
    from node.config import load_config

    folder = tmp_path / "nodes" / "27787-03"
    folder.mkdir(parents=True)
    (folder / "node.toml").write_text('[node]\nid = "27787-03"\n[broker]\nservers = ["b.example.vn:8883"]\n'
                                      'ca_file = "ca.crt"\n[trust]\nfile = "trust.json"\n'
                                      '[storage]\nstate_dir = "state"\n')
    cfg = load_config(folder / "node.toml")
    assert cfg.broker.ca_file == str(folder / "ca.crt") and cfg.trust.file == str(folder / "trust.json")
    assert cfg.storage.state_dir == str(folder / "state") and cfg.storage.cache_dir == str(folder / "state" / "cache")
    assert cfg.broker.key_file == "/etc/speaker-node/node.key"   # absolute defaults stay as they are
