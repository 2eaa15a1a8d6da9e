"""District node certificates: issue, list, revoke, CRL - and a real Mosquitto 2 that honours the CRL."""

from __future__ import annotations

import json
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import connack_code, wait_until
from test_provision_support import make_district

from node.errors import ConfigError
from provisioning import pki
from provisioning.district import certs
from provisioning.district.localbroker import LocalBroker


@pytest.fixture
def district(tmp_path):
    return make_district(tmp_path / "district")


def issue(district, node_id, out):
    assert certs.main_issue_cert([str(district), "--node", node_id, "--out-dir", str(out)]) == 0
    return out


def test_issued_node_cert_is_p256_client_cert_named_after_the_node(district, tmp_path):
    out = issue(district, "27787-03", tmp_path / "n")
    cert = pki.load_cert(out / "node.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "27787-03"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["27787-03"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.public_key().curve.name == "secp256r1"
    assert (out / "node.key").stat().st_mode & 0o777 == 0o600
    ca = pki.load_cert(district / "tls" / "ca.crt")
    cert.verify_directly_issued_by(ca)
    record = district / "nodes" / "27787-03"
    assert (record / "fingerprint").read_text().strip() == pki.fingerprint(cert)
    assert int((record / "serial").read_text(), 16) == cert.serial_number
    registry = json.loads((district / "nodes" / "registry.json").read_text())
    assert registry["nodes"]["27787-03"][0]["fingerprint"] == pki.fingerprint(cert)


def test_csr_is_certified_without_the_key_leaving_the_node(district, tmp_path, capsys):
    key = pki.new_ec_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "n.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    assert certs.main_issue_cert([str(district), "--node", "27787-04", "--csr", str(tmp_path / "n.csr")]) == 0
    cert = pki.load_cert(district / "nodes" / "27787-04" / "cert.pem")
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "27787-04"  # not the CSR's CN


def test_second_active_cert_for_a_node_needs_replace_and_supersedes_the_first(district, tmp_path):
    issue(district, "27787-03", tmp_path / "a")
    assert certs.main_issue_cert([str(district), "--node", "27787-03", "--out-dir", str(tmp_path / "b")]) == 2
    assert (
        certs.main_issue_cert(
            [str(district), "--node", "27787-03", "--out-dir", str(tmp_path / "b"), "--replace"]
        )
        == 0
    )
    rows = certs.list_certs(district)
    assert [r["status"] for r in rows] == ["superseded", "active"]
    crl = x509.load_pem_x509_crl((district / "tls" / "crl.pem").read_bytes())
    old = pki.load_cert(tmp_path / "a" / "node.crt")
    assert crl.get_revoked_certificate_by_serial_number(old.serial_number) is not None


def test_a_public_key_is_never_certified_twice(district):
    key = pki.new_ec_key()
    certs.issue_node_cert(district, "27787-05", key.public_key())
    certs.revoke_node(district, "27787-05")
    with pytest.raises(ConfigError, match="already certified"):
        certs.issue_node_cert(district, "27787-05", key.public_key())


def test_bad_node_id_and_missing_workspace_fail_cleanly(district, tmp_path, capsys):
    assert certs.main_issue_cert([str(district), "--node", "27787-3", "--out-dir", str(tmp_path / "x")]) == 2
    assert "COMMUNE-CLUSTER" in capsys.readouterr().err
    assert certs.main_list_certs([str(tmp_path / "nowhere")]) == 2
    assert "speaker-district init" in capsys.readouterr().err


def test_list_certs_json_and_table(district, tmp_path, capsys):
    issue(district, "27787-01", tmp_path / "1")
    issue(district, "27787-02", tmp_path / "2")
    certs.revoke_node(district, "27787-02", "keyCompromise")
    capsys.readouterr()
    assert certs.main_list_certs([str(district), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["node"], r["status"], r["reason"]) for r in rows} == {
        ("27787-01", "active", None),
        ("27787-02", "revoked", "keyCompromise"),
    }
    assert certs.main_list_certs([str(district)]) == 0
    assert "27787-02   revoked" in capsys.readouterr().out


def test_crl_export_lists_revoked_serials_only(district, tmp_path, capsys):
    issue(district, "27787-01", tmp_path / "1")
    issue(district, "27787-02", tmp_path / "2")
    assert certs.main_revoke([str(district), "--node", "27787-02"]) == 0
    assert certs.main_crl([str(district), "-o", str(tmp_path / "crl.pem")]) == 0
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    ca = pki.load_cert(district / "tls" / "ca.crt")
    assert crl.is_signature_valid(ca.public_key())
    revoked = {r.serial_number for r in crl}
    assert revoked == {pki.load_cert(tmp_path / "2" / "node.crt").serial_number}
    capsys.readouterr()
    assert certs.main_crl([str(district)]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN X509 CRL-----")


def test_revoking_an_unknown_node_is_an_error(district, capsys):
    assert certs.main_revoke([str(district), "--node", "27787-09"]) == 2
    assert "no certificate" in capsys.readouterr().err


# --- a real broker -----------------------------------------------------------------------------------


def _accepted(broker, card, client_id: str) -> bool:
    """Does the broker accept an MQTT connection over TLS with the node certificate in CARD?"""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(broker.workspace / "tls" / "ca.crt"))
    ctx.load_cert_chain(str(card / "node.crt"), str(card / "node.key"))
    return connack_code(broker, ctx, client_id) == 0


@pytest.fixture
def mosquitto(district, tmp_path):
    """The shipped broker config without the identity fence: what is under test here is Mosquitto's own
    listener CRL (`crlfile`), which the fence plugin would otherwise answer for first."""
    broker = LocalBroker(district, tmp_path / "mosquitto", nodes=None, fenced=False)
    yield broker
    broker.stop()


def test_revoked_node_certificate_is_refused_by_mosquitto_crlfile(district, tmp_path, mosquitto):
    good, bad = issue(district, "27787-01", tmp_path / "good"), issue(district, "27787-02", tmp_path / "bad")
    assert certs.main_revoke([str(district), "--node", "27787-02", "--reason", "keyCompromise"]) == 0
    mosquitto.start()
    assert _accepted(mosquitto, good, "27787-01")
    assert not _accepted(mosquitto, bad, "27787-02")


def test_crl_rewritten_while_mosquitto_runs_takes_effect_on_sighup(district, tmp_path, mosquitto):
    node = issue(district, "27787-01", tmp_path / "n")
    mosquitto.start()
    assert _accepted(mosquitto, node, "27787-01")
    other = issue(district, "27787-02", tmp_path / "o")
    certs.revoke_node(district, "27787-01", "keyCompromise")
    # Mosquitto keeps the CRL it loaded: until the reload the revoked node still gets in.
    assert _accepted(mosquitto, node, "27787-01")
    mosquitto.reload()  # SIGHUP; an unfenced broker says nothing when it is done, so wait for the verdict
    wait_until(lambda: not _accepted(mosquitto, node, "27787-01"), timeout=10)
    assert _accepted(mosquitto, other, "27787-02")
