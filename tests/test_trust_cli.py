"""The command-line tools, driven as a technician and a district operator would: real processes and files."""

import base64
import datetime as dt
import json
import stat
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from cryptography import x509

from node.trust.envelope import PAYLOAD_COMMAND
from node.trust.trustdoc import load_trust_file, verify_trust_update
from node.trust.verifier import Accepted, verify_command

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc


def run(*args, module="provisioning.district.cli"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def district(*args):
    return run(*args)


def node(*args):
    return run(*args, module="node")


def assert_clean_failure(result, code):
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("district") / "ws"
    result = district("init", directory, "--district", "Tân Trụ", "--broker-host", "broker.example",
                      "--root-keys", "3", "--root-threshold", "2")
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "ban-tin.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 8000 * 2)  # 2 seconds
    return path


def test_init_creates_the_documented_workspace(workspace):
    for name in ("district.toml", "trust.json", "tls/ca.key", "tls/ca.crt", "tls/broker.key",
                 "tls/broker.crt", "tls/district.key", "tls/district.crt", "tls/crl.pem"):
        assert (workspace / name).is_file(), name
    for name in ("root-1", "root-2", "root-3", "bulletin", "emergency-a", "emergency-b", "schedule", "live"):
        mode = stat.S_IMODE((workspace / "keys" / f"{name}.key").stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    for name in ("ca", "broker", "district"):
        assert stat.S_IMODE((workspace / "tls" / f"{name}.key").stat().st_mode) == 0o600
    toml = (workspace / "district.toml").read_text()
    # the first --broker-host is what nodes are given (issue 10: no silent loopback default)
    assert 'broker = "broker.example:8883"' in toml and 'topic_prefix = "spk"' in toml


def test_init_trust_document_has_roles_thresholds_and_root(workspace):
    trust = load_trust_file(workspace / "trust.json")
    assert trust.version == 1 and trust.root_threshold == 2 and len(trust.root_keys) == 3
    assert trust.threshold("emergency") == 2
    assert trust.key_named("schedule").roles == frozenset({"schedule", "config"})
    assert trust.key_named("time").roles == frozenset({"time"})   # the online time service's own key
    assert trust.key_named("live").roles == frozenset({"live"})


def test_init_tls_certificates_name_the_broker_and_district(workspace):
    broker = x509.load_pem_x509_certificate((workspace / "tls/broker.crt").read_bytes())
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    names |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    assert {"localhost", "127.0.0.1", "::1", "broker.example"} <= names
    client = x509.load_pem_x509_certificate((workspace / "tls/district.crt").read_bytes())
    assert client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "district"
    x509.load_pem_x509_crl((workspace / "tls/crl.pem").read_bytes())


def test_init_refuses_to_overwrite_a_workspace_without_force(workspace, tmp_path):
    before = (workspace / "trust.json").read_bytes()
    assert_clean_failure(district("init", workspace), 1)
    assert (workspace / "trust.json").read_bytes() == before
    other = tmp_path / "ws2"
    assert district("init", other).returncode == 0
    first = (other / "trust.json").read_bytes()
    assert district("init", other, "--force").returncode == 0
    assert (other / "trust.json").read_bytes() != first


def test_signed_wav_verifies_on_the_node(workspace, wav, tmp_path):
    manifest = tmp_path / "ban-tin.manifest.json"
    result = district("sign-audio", workspace, wav, "--to", "27787-03,c27790", "--valid-for", "2h",
                      "-o", manifest)
    assert result.returncode == 0, result.stderr
    verified = node("verify", wav, manifest, "--trust", workspace / "trust.json", "--node-id", "27787-03")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK content_id=ban-tin-") and "level=normal" in verified.stdout
    assert "duration=2s" in verified.stdout
    by_group = node("verify", wav, manifest, "--trust", workspace / "trust.json", "--node-id", "27790-01",
                    "--groups", "c27790,d760")
    assert by_group.returncode == 0, by_group.stderr


def test_verify_rejects_a_tampered_file_with_a_stable_reason(workspace, wav, tmp_path):
    manifest = tmp_path / "m.json"
    assert district("sign-audio", workspace, wav, "--to", "27787-03", "-o", manifest).returncode == 0
    tampered = tmp_path / "tampered.wav"
    data = bytearray(wav.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    result = node("verify", tampered, manifest, "--trust", workspace / "trust.json", "--node-id", "27787-03")
    assert_clean_failure(result, 1)
    assert result.stderr.startswith("REJECTED audio_hash_mismatch: ")


def test_verify_rejects_another_node_and_an_expired_manifest(workspace, wav, tmp_path):
    manifest = tmp_path / "m.json"
    assert district("sign-audio", workspace, wav, "--to", "27787-03", "--valid-for", "1h", "-o",
                    manifest).returncode == 0
    args = (wav, manifest, "--trust", workspace / "trust.json")
    wrong = node("verify", *args, "--node-id", "27787-09")
    assert_clean_failure(wrong, 1)
    assert wrong.stderr.startswith("REJECTED wrong_target")
    later = (dt.datetime.now(UTC) + dt.timedelta(hours=3)).isoformat()
    expired = node("verify", *args, "--node-id", "27787-03", "--at", later)
    assert_clean_failure(expired, 1)
    assert expired.stderr.startswith("REJECTED expired")
    after_trust = node("verify", *args, "--node-id", "27787-03", "--at", "2040-01-01T00:00:00Z")
    assert after_trust.stderr.startswith("REJECTED trust_expired")


def test_emergency_manifest_carries_both_emergency_signatures(workspace, wav, tmp_path):
    manifest = tmp_path / "em.json"
    assert district("sign-audio", workspace, wav, "--to", "all", "--level", "emergency", "-o",
                    manifest).returncode == 0
    assert len(json.loads(manifest.read_bytes())["signatures"]) == 2
    result = node("verify", wav, manifest, "--trust", workspace / "trust.json", "--node-id", "27787-03")
    assert result.returncode == 0 and "level=emergency" in result.stdout


@pytest.mark.parametrize("args", [[], ["only-audio"],
                                  ["a", "m", "--trust", "t", "--node-id", "x", "--at", "soon"]])
def test_verify_usage_errors_exit_2_without_traceback(args):
    assert_clean_failure(node("verify", *args), 2)


def test_verify_with_garbage_manifest_and_trust_fails_cleanly(workspace, wav, tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff not json")
    result = node("verify", wav, garbage, "--trust", workspace / "trust.json", "--node-id", "27787-03")
    assert_clean_failure(result, 1)
    assert result.stderr.startswith("REJECTED malformed")
    result = node("verify", wav, garbage, "--trust", garbage, "--node-id", "27787-03")
    assert_clean_failure(result, 1)


def _printed(workspace, *args):
    result = district("send", workspace, *args, "--print")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().encode()


def _verify_printed(workspace, envelope, now=None, versions=None):
    trust = load_trust_file(workspace / "trust.json")
    return verify_command(envelope, trust=trust, node_id="27787-03", groups=["c27787"],
                          topic="spk/node/27787-03/cmd", now=now or dt.datetime.now(UTC), seen=set(),
                          versions=versions or {})


def test_send_print_builds_commands_a_node_accepts(workspace, wav, tmp_path):
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps({"version": 2, "timezone": "Asia/Ho_Chi_Minh", "slots": [
        {"id": "sang", "weekdays": [1, 2, 3, 4, 5], "start": "05:30", "duration": 1800, "level": "normal",
         "volume": None, "live": {"url": "https://radio.example/vov1", "codec": "mp3"}}]}))
    cases = {
        "play": ["play", "--to", "27787-03", "--audio", wav, "--url", "https://district.example/a.wav",
                 "--level", "emergency", "--id", "forced-command-id-0001"],
        "play-fields": ["play", "--to", "c27787", "--content-id", "x1", "--url", "https://d.example/x1.mp3",
                        "--sha256", "ab" * 32, "--length", "1000", "--duration", "12.5"],
        "stop": ["stop", "--to", "27787-03", "--all"],
        "schedule": ["schedule", "--to", "27787-03", "--file", schedule],
        "live": ["live", "--to", "27787-03", "--url", "https://radio.example/live", "--max-duration", "30m",
                 "--level", "emergency"],
        "config": ["config", "--to", "27787-03", "--version", "3", "--set", "audio.volume=70",
                   "--set", "site.name=Ấp 3"],
    }
    for name, args in cases.items():
        decision = _verify_printed(workspace, _printed(workspace, *args))
        assert isinstance(decision, Accepted), (name, decision)
    # Time beacons are retired (protocol §7a): time comes only as answers to a node's nonce.
    assert district("send", workspace, "time", "--to", "all", "--print").returncode == 2
    play = _verify_printed(workspace, _printed(workspace, *cases["play"]))
    assert play.command.id == "forced-command-id-0001"
    assert play.command.body.content.duration == 2.0 and len(play.keyids) == 2
    live = _verify_printed(workspace, _printed(workspace, *cases["live"]))
    assert len(live.keyids) == 3
    config = _verify_printed(workspace, _printed(workspace, *cases["config"]))
    assert dict(config.command.body.settings) == {"audio.volume": 70, "site.name": "Ấp 3"}


def test_send_print_honours_validity_options(workspace):
    envelope = _printed(workspace, "stop", "--to", "27787-03", "--level", "normal", "--not-before",
                        "2026-12-01T00:00:00Z", "--valid-for", "90s")
    body = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    assert (body["not_before"], body["expires"]) == ("2026-12-01T00:00:00Z", "2026-12-01T00:01:30Z")
    assert json.loads(envelope)["payloadType"] == PAYLOAD_COMMAND


@pytest.mark.parametrize("args", [
    ["stop", "--to", "27787-03"],
    ["stop", "--to", "27787-03", "--all", "--level", "normal"],
    ["play", "--to", "27787-03", "--url", "https://x.example/a.mp3"],
    ["play", "--to", "nowhere", "--content-id", "x", "--sha256", "ab" * 32, "--length", "1",
     "--duration", "1"],
    ["play", "--to", "27787-03", "--content-id", "x", "--sha256", "zz", "--length", "1", "--duration", "1"],
    ["stop", "--to", "27787-03", "--all", "--valid-for", "3d"],
])
def test_send_refuses_commands_a_node_would_reject(workspace, args):
    result = district("send", workspace, *args, "--print")
    assert_clean_failure(result, 2)
    assert result.stdout == ""


def test_send_trust_revokes_a_key_and_nodes_accept_the_new_version(workspace, tmp_path):
    before = load_trust_file(workspace / "trust.json")
    result = district("send", workspace, "trust", "--to", "all", "--revoke", "live", "--print")
    assert result.returncode == 0, result.stderr
    new = verify_trust_update(result.stdout.strip().encode(), current_trust=before,
                              now_or_floor=dt.datetime.now(UTC))
    assert new.version == before.version + 1
    assert new.key_named("live").keyid in new.revoked
    assert load_trust_file(workspace / "trust.json").version == new.version
    live = _printed(workspace, "live", "--to", "27787-03", "--url", "https://r.example/l",
                    "--max-duration", "1h")
    assert _verify_printed(workspace, live).reason == "revoked_key"


def test_send_to_an_unreachable_broker_fails_cleanly(workspace):
    result = district("send", workspace, "--broker", "127.0.0.1:1", "stop", "--to", "all", "--all",
                      "--timeout", "3")
    assert_clean_failure(result, 1)
    assert "not delivered" in result.stderr
