"""Ed25519 keys as the protocol names them (node/trust/keys.py): raw bytes, keyids, PEM, verification."""

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.trust import keys as ed25519

SEED = bytes(range(32))


def test_a_keyid_is_the_hex_sha256_of_the_raw_public_key():
    key = ed25519.from_seed(SEED)
    raw = ed25519.public_raw(key)
    assert len(raw) == ed25519.PUBLIC_KEY_BYTES == 32
    assert raw == ed25519.public_raw(key.public_key())
    assert ed25519.keyid_of(raw) == hashlib.sha256(raw).hexdigest() == ed25519.keyid_of_key(key)
    assert ed25519.keyid_of_key(key.public_key()) == ed25519.keyid_of(raw)
    assert base64.b64decode(ed25519.public_b64(key)) == raw == base64.b64decode(ed25519.public_b64(key.public_key()))


def test_seeded_keys_are_deterministic_and_generated_keys_are_not():
    assert ed25519.public_raw(ed25519.from_seed(SEED)) == ed25519.public_raw(ed25519.from_seed(SEED))
    assert ed25519.keyid_of_key(ed25519.generate()) != ed25519.keyid_of_key(ed25519.generate())


def test_public_pem_and_private_pem_round_trip():
    key = ed25519.generate()
    for source in (key, key.public_key()):
        pem = ed25519.public_pem(source)
        assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
        loaded = serialization.load_pem_public_key(pem)
        assert ed25519.public_raw(loaded) == ed25519.public_raw(key)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    assert ed25519.keyid_of_key(ed25519.load_private_pem(private)) == ed25519.keyid_of_key(key)


def test_a_private_key_of_another_algorithm_is_refused():
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError) as info:
        ed25519.load_private_pem(other)
    assert str(info.value) == "not an Ed25519 private key"


def test_verify_is_true_only_for_the_signed_message():
    key = ed25519.from_seed(SEED)
    public = ed25519.public_raw(key)
    signature = key.sign(b"message")
    assert ed25519.verify(public, signature, b"message") is True
    assert ed25519.verify(public, signature, b"messagE") is False
    assert ed25519.verify(public, bytes(64), b"message") is False
    assert ed25519.verify(public, signature[:63], b"message") is False
    assert ed25519.verify(public, signature + b"\x00", b"message") is False
    assert ed25519.verify(public[:31], signature, b"message") is False
    assert ed25519.verify(public + b"\x00", signature, b"message") is False
    other = ed25519.public_raw(ed25519.from_seed(bytes(32)))
    assert ed25519.verify(other, signature, b"message") is False
