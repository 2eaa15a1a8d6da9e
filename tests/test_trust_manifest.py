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


# -- exact decisions: the reason, the detail and the command each refusal names ----------------------------

CID = "usb-manifest-000001"


def refused(decision, reason, detail):
    assert (decision.reason, decision.detail, decision.command_id) == (reason, detail, CID), decision


def test_each_wrong_file_names_what_is_wrong_and_the_command(audio, tmp_path):
    refused(check(tmp_path / "gone.mp3", manifest_for(AUDIO)), "audio_length_mismatch",
            "cannot read audio: No such file or directory")
    refused(check(tmp_path, manifest_for(AUDIO)), "audio_length_mismatch", "cannot read audio: Is a directory")
    audio.write_bytes(AUDIO[:-1])
    refused(check(audio, manifest_for(AUDIO)), "audio_length_mismatch",
            f"file is shorter than the signed {len(AUDIO)} bytes")
    audio.write_bytes(AUDIO + b"\x00")
    refused(check(audio, manifest_for(AUDIO)), "audio_length_mismatch",
            f"file is longer than the signed {len(AUDIO)} bytes")
    other = AUDIO[::-1]
    audio.write_bytes(other)
    refused(check(audio, manifest_for(AUDIO)), "audio_hash_mismatch",
            f"sha256 {hashlib.sha256(other).hexdigest()[:12]}… != signed {hashlib.sha256(AUDIO).hexdigest()[:12]}…")


def test_a_file_exactly_at_the_size_limit_is_read_and_one_byte_more_is_refused_unread(audio):
    at_limit = Limits(audio_max_bytes=len(AUDIO))
    assert isinstance(check(audio, manifest_for(AUDIO), limits=at_limit), Accepted)
    small = Limits(audio_max_bytes=len(AUDIO) - 1)
    refused(check(audio, manifest_for(AUDIO[:1000]), limits=small), "audio_too_large",
            f"{len(AUDIO)} bytes, limit {len(AUDIO) - 1}")


def test_a_longer_file_is_read_only_one_byte_past_the_signed_length(audio, monkeypatch):
    audio.write_bytes(AUDIO + bytes(3 * 1024 * 1024))   # 3 MiB past the signed length
    returned = []
    real_open = type(audio).open

    def counting_open(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        real_read = handle.read

        class Counting:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def read(self, size=-1):
                chunk = real_read(size)
                returned.append(len(chunk))
                return chunk

        return Counting()

    monkeypatch.setattr(type(audio), "open", counting_open)
    refused(check(audio, manifest_for(AUDIO)), "audio_length_mismatch",
            f"file is longer than the signed {len(AUDIO)} bytes")
    assert sum(returned) == len(AUDIO) + 1
    assert max(returned) <= 1024 * 1024


def test_a_manifest_must_be_a_play_command_without_a_url(audio):
    stop = V.sign(V.command("stop", {"all": True}, cid=CID), ["emergency-a"])
    refused(check(audio, stop), "unsupported_type", "a manifest must be a play command, not stop")
    refused(check(audio, manifest_for(AUDIO, url="https://evil.example/a.mp3")), "malformed",
            "body.url must be null in a manifest")


def test_a_manifest_is_verified_for_our_groups_from_no_topic_and_against_seen_ids(audio):
    assert isinstance(check(audio, manifest_for(AUDIO, targets=["d760"])), Accepted)
    assert verify_audio_file(audio, manifest_for(AUDIO, targets=["d760"]), TRUST, V.NODE_ID, (), V.NOW).reason == \
        "wrong_target"
    refused(check(audio, manifest_for(AUDIO), seen={CID}), "replayed", f"command {CID} was already accepted")
    schedule = V.sign(V.command("schedule", V.schedule_body(1), cid=CID), ["schedule"])
    assert check(audio, schedule).reason == "unsupported_type"   # no versions to compare: not a rollback


def test_a_file_one_byte_longer_than_a_signed_length_of_whole_chunks_is_refused(tmp_path):
    from node.trust.manifest import CHUNK

    data = bytes(range(256)) * (2 * CHUNK // 256)      # exactly two read chunks
    path = tmp_path / "two-chunks.mp3"
    path.write_bytes(data + b"\x00")
    decision = check(path, manifest_for(data))
    assert (decision.reason, decision.detail) == ("audio_length_mismatch",
                                                  f"file is longer than the signed {len(data)} bytes")
    path.write_bytes(data)
    assert isinstance(check(path, manifest_for(data)), Accepted)
