"""`speaker-provision node new`: one key per node, certificate registered, config the node can read."""

from __future__ import annotations

import json
import stat
import tomllib

import pytest
from test_provision_support import make_district

from provisioning import pki
from provisioning.district.certs import list_certs
from provisioning.node_new import main


@pytest.fixture
def district(tmp_path):
    return make_district(tmp_path / "district", servers="broker.example.vn:8883")


def new(district, out, *extra, cluster="3"):
    return main(
        [
            "new",
            str(district),
            "--commune",
            "27787",
            "--district",
            "760",
            "--province",
            "75",
            "--cluster",
            cluster,
            "-o",
            str(out),
            *extra,
        ]
    )


def test_node_folder_has_own_key_registered_cert_and_config(district, tmp_path, capsys):
    assert new(district, tmp_path / "out") == 0
    out = capsys.readouterr().out
    node = tmp_path / "out" / "27787-03"
    cert = pki.load_cert(node / "node.crt")
    assert out.splitlines()[0] == "27787-03" and pki.fingerprint(cert) in out
    assert stat.S_IMODE((node / "node.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(node.stat().st_mode) == 0o700
    key = pki.load_private_key(node / "node.key")
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert (node / "ca.crt").read_bytes() == (district / "tls" / "ca.crt").read_bytes()
    assert (node / "trust.json").read_bytes() == (district / "trust.json").read_bytes()
    assert (district / "nodes" / "27787-03" / "cert.pem").read_bytes() == (node / "node.crt").read_bytes()
    assert [r["status"] for r in list_certs(district)] == ["active"]
    ident = json.loads((node / "identity.json").read_text())
    assert ident["fingerprint"] == pki.fingerprint(cert)


def test_node_toml_matches_the_node_config_contract(district, tmp_path):
    assert new(district, tmp_path / "out", "--broker", "a.example.vn:8883", "--broker", "10.0.0.5:8883") == 0
    cfg = tomllib.loads((tmp_path / "out" / "27787-03" / "node.toml").read_text())
    assert cfg["node"] == {
        "id": "27787-03",
        "groups": ["c27787", "d760", "p75"],
        "timezone": "Asia/Ho_Chi_Minh",
    }
    assert cfg["broker"] == {
        "servers": ["a.example.vn:8883", "10.0.0.5:8883"],
        "topic_prefix": "spk",
        # relative to the file's folder: the same node.toml works in the node folder on the laptop
        # and in /etc/speaker-node on the node
        "ca_file": "ca.crt",
        "cert_file": "node.crt",
        "key_file": "node.key",
    }
    assert cfg["trust"] == {"file": "trust.json"}
    assert cfg["storage"]["state_dir"] == "/var/lib/speaker-node"
    assert cfg["relays"]["amplifier"] == {"pin": 17, "active_high": True}
    assert cfg["relays"]["zones"] == [{"name": "main", "pin": 27, "active_high": True}]
    assert cfg["inputs"]["door"] == {"pin": 5, "active_high": False}
    assert cfg["modem"]["port"] == "/dev/ttyModemAT"


def test_node_config_is_accepted_by_the_node_own_checker(district, tmp_path):
    config = pytest.importorskip("node.config")
    assert new(district, tmp_path / "out") == 0
    cfg = config.load_config(tmp_path / "out" / "27787-03" / "node.toml")
    assert cfg.node.id == "27787-03"


def test_broker_comes_from_district_toml_by_default(district, tmp_path):
    assert new(district, tmp_path / "out") == 0
    cfg = tomllib.loads((tmp_path / "out" / "27787-03" / "node.toml").read_text())
    assert cfg["broker"]["servers"] == ["broker.example.vn:8883"]


def test_works_on_a_workspace_made_by_speaker_district_init(tmp_path):
    workspace = pytest.importorskip("provisioning.district.workspace")
    workspace.init_workspace(tmp_path / "d", broker_hosts=["broker.example.vn"])
    assert new(tmp_path / "d", tmp_path / "out") == 0
    assert (tmp_path / "out" / "27787-03" / "node.crt").exists()
    # district.toml carries the --broker-host, so the node gets it (not 127.0.0.1)
    cfg = tomllib.loads((tmp_path / "out" / "27787-03" / "node.toml").read_text())
    assert cfg["broker"]["servers"] == ["broker.example.vn:8883"]


def test_workspace_without_broker_host_gives_no_silent_loopback_default(tmp_path, capsys):
    from provisioning.district.workspace import init_workspace

    init_workspace(tmp_path / "d")
    assert new(tmp_path / "d", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:8883 is a loopback address" in err and "district.toml" in err and "--broker" in err
    assert not (tmp_path / "out" / "27787-03").exists()
    assert new(tmp_path / "d", tmp_path / "out", "--broker", "mqtt.district.example.vn:8883") == 0


@pytest.mark.parametrize("server", ["127.0.0.1:8883", "localhost:8883", "[::1]:8883", "0.0.0.0:8883",
                                    "127.5.6.7:1883"])
def test_loopback_broker_is_refused(district, tmp_path, capsys, server):
    assert new(district, tmp_path / "out", "--broker", server) == 2
    assert "loopback" in capsys.readouterr().err


def test_no_broker_anywhere_is_refused(tmp_path, capsys):
    district = make_district(tmp_path / "district")
    (district / "district.toml").write_text('district = "test"\n')
    assert new(district, tmp_path / "out") == 2
    assert "no broker address" in capsys.readouterr().err


def test_existing_node_folder_is_never_overwritten_and_key_never_reused(district, tmp_path, capsys):
    assert new(district, tmp_path / "out") == 0
    key_before = (tmp_path / "out" / "27787-03" / "node.key").read_bytes()
    assert new(district, tmp_path / "out") == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "27787-03" / "node.key").read_bytes() == key_before
    # a second laptop folder for the same pole needs --replace, and gets a brand-new key
    assert new(district, tmp_path / "other") == 2
    assert "active certificate" in capsys.readouterr().err
    assert new(district, tmp_path / "other", "--replace") == 0
    assert (tmp_path / "other" / "27787-03" / "node.key").read_bytes() != key_before
    assert [r["status"] for r in list_certs(district)] == ["superseded", "active"]


def test_bad_input_is_explained_not_traced(district, tmp_path, capsys):
    assert new(district, tmp_path / "out", cluster="0") == 2
    assert "cluster" in capsys.readouterr().err
    assert new(district, tmp_path / "out", "--broker", "nohostport") == 2
    assert "host:port" in capsys.readouterr().err
    assert not (tmp_path / "out" / "27787-03").exists()
    assert list_certs(district) == []


def test_vietnamese_messages_when_lang_is_vi(district, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LC_ALL", "vi_VN.UTF-8")
    assert new(district, tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert "Dấu vân tay" in captured.out and "Đã tạo nút 27787-03" in captured.err
