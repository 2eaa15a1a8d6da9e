"""`speaker-node wipe`: decommissioning erases the key, trust file, caches and records - only after the
technician typed the right node id."""

from __future__ import annotations

import io

import pytest

from node import wipe


@pytest.fixture
def node(tmp_path):
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    (state / "cache" / "audio").mkdir(parents=True)
    (etc / "node.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n")
    (etc / "node.crt").write_text("cert")
    (etc / "ca.crt").write_text("ca")
    (etc / "trust.json").write_text("{}")
    (state / "records.sqlite").write_bytes(b"records")
    (state / "cache" / "audio" / "bulletin.opus").write_bytes(b"audio")
    config = etc / "node.toml"
    config.write_text(f"""
[node]
id = "27787-03"
groups = ["c27787", "d760", "p75"]
[broker]
servers = ["broker.example.vn:8883"]
ca_file = "{etc}/ca.crt"
cert_file = "{etc}/node.crt"
key_file = "{etc}/node.key"
[trust]
file = "{etc}/trust.json"
[storage]
state_dir = "{state}"
""")
    return config, etc, state


def test_wrong_node_id_erases_nothing(node, monkeypatch, capsys):
    config, etc, state = node
    monkeypatch.setattr("sys.stdin", io.StringIO("27787-04\n"))
    assert wipe.main(["--config", str(config)]) == 1
    assert (etc / "node.key").exists() and (state / "records.sqlite").exists()


def test_no_answer_erases_nothing(node, monkeypatch):
    config, etc, _ = node
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert wipe.main(["--config", str(config)]) == 1
    assert (etc / "node.key").exists()


def test_typed_node_id_erases_key_trust_caches_and_records(node, monkeypatch, capsys):
    config, etc, state = node
    monkeypatch.setattr("sys.stdin", io.StringIO("27787-03\n"))
    assert wipe.main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    for gone in (etc / "node.key", etc / "node.crt", etc / "trust.json", state):
        assert not gone.exists(), gone
        assert str(gone) in out
    assert "speaker-district revoke" in out
    assert config.exists() and (etc / "ca.crt").exists()  # not secret; kept for a re-provisioning


def test_key_is_overwritten_before_unlink(node, monkeypatch):
    config, etc, _ = node
    seen = {}
    real_unlink = type(etc).unlink

    def spy(self, *a, **kw):
        if self.name == "node.key":
            seen["content"] = self.read_bytes()
        return real_unlink(self, *a, **kw)

    monkeypatch.setattr(type(etc), "unlink", spy)
    assert wipe.main(["--config", str(config), "--yes"]) == 0
    assert b"secret" not in seen["content"] and len(seen["content"]) > 0


def test_vietnamese_prompt_and_second_wipe_finds_nothing(node, monkeypatch, capsys):
    config, _, _ = node
    monkeypatch.setenv("LANG", "vi_VN.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("27787-03\n"))
    assert wipe.main(["--config", str(config)]) == 0
    assert "Gõ mã nút để xác nhận" in capsys.readouterr().out
    assert wipe.main(["--config", str(config), "--yes"]) == 0
    assert "Không có gì để xóa" in capsys.readouterr().out


def test_unreadable_config_is_a_clean_error(tmp_path, capsys):
    assert wipe.main(["--config", str(tmp_path / "missing.toml"), "--yes"]) == 2
    assert "missing.toml" in capsys.readouterr().err
