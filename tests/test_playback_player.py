"""Real libVLC writing WAV files (afile output): what actually comes out of the "speaker"."""

from __future__ import annotations

import queue
import time

import pytest
from support import wait_until

from node.playback.player import FakePlayer, PlaybackState, PlayerEvent, PlayerMisuse, VlcPlayer
from tests.audio_fixtures import analyse_wav, speech_wav, tone_wav

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def events():
    return queue.Queue()


@pytest.fixture
def player(tmp_path, events):
    p = VlcPlayer(events.put, output="wav", wav_path=tmp_path / "out" / "{item_id}.wav")
    yield p
    p.close()


def wait_terminal(events: queue.Queue, item_id: str, timeout: float = 20.0) -> list[PlayerEvent]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        seen.append(event)
        if event.item_id == item_id and event.kind in ("ended", "error", "stopped"):
            return seen


def test_tone_file_comes_out_with_its_duration_and_ended_is_posted(tmp_path, player, events):
    source = tone_wav(tmp_path / "tone.wav", seconds=1.5)
    player.play(str(source), volume=100, item_id="bulletin-1")
    seen = wait_terminal(events, "bulletin-1")
    assert [e.kind for e in seen] == ["playing", "ended"]
    player.stop()  # stop after the end posts nothing and finalises the WAV header
    out = analyse_wav(player.last_wav_path)
    assert out.duration == pytest.approx(1.5, abs=0.1)
    assert out.first_sound_at is not None and out.first_sound_at < 0.1
    assert out.rms > 0.2
    assert player.state is PlaybackState.ENDED
    assert events.empty()


def test_vietnamese_speech_bulletin_is_heard(tmp_path, player, events):
    source = speech_wav(tmp_path / "speech.wav", "Thông báo của Ủy ban nhân dân xã")
    player.play(str(source), volume=80, item_id="tts")
    assert wait_terminal(events, "tts")[-1].kind == "ended"
    player.stop()
    expected = analyse_wav(source)
    out = analyse_wav(player.last_wav_path)
    assert out.sounding_seconds == pytest.approx(expected.sounding_seconds, abs=0.15)


def test_random_bytes_named_mp3_is_reported_as_failed_to_sound(tmp_path, player, events):
    bad = tmp_path / "garbage.mp3"
    bad.write_bytes(bytes(range(256)) * 40)
    player.play(str(bad), volume=100, item_id="garbage")
    seen = wait_terminal(events, "garbage")
    # libVLC 3.0 posts Playing then EndReached for this input; the adapter turns it into an error.
    assert seen[-1].kind == "error" and seen[-1].detail == "no_audio"
    assert player.state is PlaybackState.ERROR


def test_missing_file_is_an_open_error(tmp_path, player, events):
    player.play(str(tmp_path / "nope.wav"), volume=100, item_id="missing")
    last = wait_terminal(events, "missing")[-1]
    assert (last.kind, last.detail) == ("error", "open_failed")


def test_stop_mid_play_posts_stopped_and_cuts_the_audio(tmp_path, player, events):
    source = tone_wav(tmp_path / "long.wav", seconds=60)
    player.play(str(source), volume=100, item_id="long")
    assert events.get(timeout=10).kind == "playing"
    # "Playing" comes before the first decoded audio: stop *mid-play*, once sound is being written.
    wait_until(lambda: player.last_wav_path.exists() and player.last_wav_path.stat().st_size > 4096,
               timeout=10, interval=0.01)  # audio is being written
    player.stop()
    last = wait_terminal(events, "long")[-1]
    assert last.kind == "stopped"
    assert analyse_wav(player.last_wav_path).duration < 50
    # Whatever libVLC still had to say about "long" comes before the events of the next item: play a short
    # one to its end and look at everything posted meanwhile.
    player.play(str(tone_wav(tmp_path / "next.wav", seconds=0.3)), volume=100, item_id="next")
    after = wait_terminal(events, "next")
    assert [(e.item_id, e.kind) for e in after] == [("next", "playing"), ("next", "ended")], \
        "no ended/error may follow a stop"


def test_play_while_playing_is_refused_until_stopped(tmp_path, player, events):
    source = tone_wav(tmp_path / "long.wav", seconds=60)
    player.play(str(source), volume=100, item_id="first")
    with pytest.raises(PlayerMisuse):
        player.play(str(source), volume=100, item_id="second")
    player.stop()
    player.play(str(source), volume=100, item_id="second")
    player.stop()
    kinds = [(e.item_id, e.kind) for e in wait_terminal(events, "second")]
    assert ("first", "stopped") in kinds and kinds[-1] == ("second", "stopped")


def test_resume_start_at_skips_the_played_part(tmp_path, player, events):
    source = tone_wav(tmp_path / "tone.wav", seconds=3.0)
    player.play(str(source), volume=100, item_id="resumed", start_at=2.0)
    assert wait_terminal(events, "resumed")[-1].kind == "ended"
    player.stop()
    assert analyse_wav(player.last_wav_path).duration == pytest.approx(1.0, abs=0.25)


def test_player_never_opens_a_network_url_itself(player):
    """libVLC checks https only against the system CAs and has no client certificate: network input is
    the node's to open (node.content.live, tests/test_live_relay.py), never libVLC's."""
    for url in ("http://127.0.0.1:1/live.wav", "https://127.0.0.1:1/live.wav"):
        with pytest.raises(PlayerMisuse):
            player.play(url, volume=100, item_id="net")
    assert player.state is PlaybackState.STOPPED


def test_fake_player_enforces_the_same_protocol():
    clock = [100.0]
    events: list[PlayerEvent] = []
    fake = FakePlayer(events.append, clock=lambda: clock[0])
    fake.play("/a.ogg", volume=70, item_id="a")
    with pytest.raises(PlayerMisuse):
        fake.play("/b.ogg", volume=70, item_id="b")
    clock[0] = 103.0
    assert fake.position() == pytest.approx(3.0)
    fake.stop()
    fake.play("/b.ogg", volume=70, item_id="b", start_at=10.0)
    with pytest.raises(PlayerMisuse):
        fake.drive_end("a")
    fake.drive_end("b")
    fake.assert_played(["a", "b"])
    assert [(e.item_id, e.kind) for e in events] == [
        ("a", "playing"), ("a", "stopped"), ("b", "playing"), ("b", "ended")]
    with pytest.raises(PlayerMisuse):
        fake.set_volume(101)
