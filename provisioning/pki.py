"""District TLS PKI: one ECDSA P-256 CA, a broker server certificate, client certificates, a CRL.

ECDSA P-256 rather than Ed25519 for X.509: cryptography's chain verifier (and many TLS stacks in
brokers) refuse Ed25519 certificate chains. Ed25519 is kept for payload signatures (node.trust).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825  # the longest lifetime common TLS clients accept for a leaf


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def create_ca(common_name: str, days: int = CA_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_ec_key()
    name = _name(common_name, "speaker-node district")
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key, ca_cert: x509.Certificate, common_name: str, public_key, sans: list[x509.GeneralName],
    usage, not_before: dt.datetime | None, not_after: dt.datetime | None, days: int,
) -> x509.Certificate:
    now = _now()
    not_before = not_before or (now - dt.timedelta(minutes=5))
    not_after = not_after or (now + dt.timedelta(days=days))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def issue_server_cert(
    ca_key, ca_cert: x509.Certificate, hostnames: list[str], days: int = LEAF_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A broker (or HTTPS content server) certificate for the given names and IP addresses."""
    key = new_ec_key()
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = _leaf(ca_key, ca_cert, hostnames[0], key.public_key(), sans,
                 ExtendedKeyUsageOID.SERVER_AUTH, None, None, days)
    return key, cert


def issue_client_cert(
    ca_key, ca_cert: x509.Certificate, common_name: str, *, public_key=None, days: int = LEAF_DAYS,
    not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey | None, x509.Certificate]:
    """A client certificate whose CN (and DNS SAN) is the MQTT identity, e.g. a node id.

    Pass `public_key` (from a CSR) to certify a key generated elsewhere; the returned key is then None.
    """
    key = None
    if public_key is None:
        key = new_ec_key()
        public_key = key.public_key()
    cert = _leaf(ca_key, ca_cert, common_name, public_key, [x509.DNSName(common_name)],
                 ExtendedKeyUsageOID.CLIENT_AUTH, not_before, not_after, days)
    return key, cert


def build_crl(
    ca_key, ca_cert: x509.Certificate, revoked: list[tuple[int, dt.datetime]], days: int = 30
) -> x509.CertificateRevocationList:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace PATH with DATA in one step (temp file, fsync, rename); MODE is set before a byte is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_key(path: str | os.PathLike, key) -> None:
    """PKCS#8 PEM, unencrypted, mode 0600 from the first byte written (never world-readable)."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(path, data, 0o600)


def write_cert(path: str | os.PathLike, cert: x509.Certificate) -> None:
    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_crl(path: str | os.PathLike, crl: x509.CertificateRevocationList) -> None:
    atomic_write(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def load_private_key(path: str | os.PathLike):
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def load_cert(path: str | os.PathLike) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated upper-case hex, as `openssl x509 -fingerprint` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def days_left(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.timezone.utc)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400
