"""Audio files on a USB stick: only the exact bytes the district signed, for this node, are accepted."""

import hashlib

import pytest
from trust_fixtures import TRUST, V

from node.trust.commands import Limits
from node.trust.manifest import verify_audio_file
from node.trust.verifier import Accepted

AUDIO = bytes(range(256)) * 9000  # 2.3 MB: more than two 1 MiB chunks


def manifest_for(data: bytes, *, url=None, level="normal", signers=("bulletin",), cid="usb-manifest-000001",
                 targets=(V.NODE_ID,)):
    body = V.play_body(level, url=url, sha256=hashlib.sha256(data).hexdigest(), length=len(data))
    return V.sign(V.command("play", body, cid=cid, targets=targets), list(signers))


@pytest.fixture
def audio(tmp_path):
    path = tmp_path / "ban-tin.mp3"
    path.write_bytes(AUDIO)
    return path


def check(path, manifest, **kw):
    return verify_audio_file(path, manifest, TRUST, V.NODE_ID, V.GROUPS, V.NOW, **kw)


def test_genuine_file_and_manifest_are_accepted(audio):
    decision = check(audio, manifest_for(AUDIO))
    assert isinstance(decision, Accepted)
    assert decision.command.body.content.length == len(AUDIO)


def test_one_flipped_byte_is_rejected(audio):
    data = bytearray(AUDIO)
    data[1_500_000] ^= 0x01
    audio.write_bytes(bytes(data))
    assert check(audio, manifest_for(AUDIO)).reason == "audio_hash_mismatch"


def test_truncated_file_is_rejected(audio):
    audio.write_bytes(AUDIO[:-1])
    assert check(audio, manifest_for(AUDIO)).reason == "audio_length_mismatch"


def test_extended_file_is_rejected(audio):
    audio.write_bytes(AUDIO + b"\x00")
    assert check(audio, manifest_for(AUDIO)).reason == "audio_length_mismatch"


def test_manifest_of_another_file_is_rejected(audio):
    other = AUDIO[::-1]
    assert check(audio, manifest_for(other)).reason == "audio_hash_mismatch"


def test_missing_audio_file_is_rejected(tmp_path):
    assert check(tmp_path / "gone.mp3", manifest_for(AUDIO)).reason == "audio_length_mismatch"


def test_file_larger_than_the_node_accepts_is_rejected(audio):
    assert check(audio, manifest_for(AUDIO), limits=Limits(audio_max_bytes=1024)).reason == "limit_exceeded"
    small = AUDIO[:1000]
    assert check(audio, manifest_for(small), limits=Limits(audio_max_bytes=1024)).reason == "audio_too_large"


def test_manifest_with_a_download_url_is_not_a_usb_manifest(audio):
    assert check(audio, manifest_for(AUDIO, url="https://evil.example/a.mp3")).reason == "malformed"


def test_manifest_for_another_node_is_rejected(audio):
    assert check(audio, manifest_for(AUDIO, targets=["27787-04"])).reason == "wrong_target"


def test_emergency_manifest_needs_both_emergency_signatures(audio):
    assert check(audio, manifest_for(AUDIO, level="emergency", signers=["emergency-a"])).reason == \
        "threshold_not_met"
    assert isinstance(check(audio, manifest_for(AUDIO, level="emergency",
                                                signers=["emergency-a", "emergency-b"])), Accepted)


def test_manifest_checked_with_untrusted_clock_is_rejected(audio):
    decision = verify_audio_file(audio, manifest_for(AUDIO), TRUST, V.NODE_ID, V.GROUPS, None)
    assert decision.reason == "clock_untrusted"
