"""Live audio only from the district, authenticated (issue 13, item 3): the node opens the https live
stream itself (district CA, its client certificate, the downloads' TLS context) and hands libVLC the
bytes through a pipe; a stream that goes silent is cut within its grace. Real libVLC decoding to WAV,
the district's real content server relaying the stream."""

from __future__ import annotations

import os
import queue
import time
import wave

import pytest
from support import NodeProcess, district_probe, write_node_config

from node.content.download import Downloader
from node.content.live import LiveOpener
from node.playback.player import PlayerEvent, VlcPlayer
from provisioning.district.content_server import ContentServer
from tests.audio_fixtures import analyse_wav, tone_wav

NODE = "27787-02"
pytestmark = pytest.mark.timeout(120)


def node_context(ws, node_id=NODE, ca=None):
    nd = ws / "nodes" / node_id
    return Downloader._tls_context(str(ca or ws / "tls" / "ca.crt"), str(nd / "node.crt"), str(nd / "node.key"))


@pytest.fixture
def content(district_ws, tmp_path):
    server = ContentServer(district_ws, tmp_path / "content").start()
    yield server
    server.stop()


@pytest.fixture
def events():
    return queue.Queue()


def make_player(tmp_path, events, context, **kw):
    return VlcPlayer(events.put, output="wav", wav_path=tmp_path / "out" / "{item_id}.wav",
                     open_stream=LiveOpener(context, **kw))


def terminal(events: queue.Queue, item_id: str, timeout: float = 30.0) -> list[PlayerEvent]:
    seen, deadline = [], time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        seen.append(event)
        if event.item_id == item_id and event.kind in ("ended", "error", "stopped"):
            return seen


def test_https_live_stream_on_the_district_ca_plays_through_the_node_s_own_tls(
        district_ws, content, tmp_path, events):
    """The stream every district needs: https on its own CA. It plays, decoded by libVLC into the WAV,
    and the only connection the server saw is the node's, with the node's client certificate."""
    url = content.publish_live(tone_wav(tmp_path / "vov.wav", seconds=2.0), "live/vov")
    player = make_player(tmp_path, events, node_context(district_ws))
    try:
        player.play(url, volume=100, item_id="relay")
        seen = terminal(events, "relay")
        assert [e.kind for e in seen if e.item_id == "relay"] == ["playing", "ended"]
        assert seen[-1].detail == "ended"  # the relay's own end of stream
        player.stop()
        assert analyse_wav(player.last_wav_path).sounding_seconds == pytest.approx(2.0, abs=0.3)
        assert content.requests == [("live/vov", NODE)]  # libVLC opened no connection of its own
    finally:
        player.close()


def test_live_stream_from_a_server_outside_the_district_ca_never_plays(district_ws, content, tmp_path, events):
    """A hostile network path answering with its own certificate: the node refuses the TLS session,
    nothing is decoded."""
    from provisioning import pki

    _, other_ca = pki.create_ca("not the district")
    other = tmp_path / "other-ca.crt"
    pki.write_cert(str(other), other_ca)
    url = content.publish_live(tone_wav(tmp_path / "vov.wav", seconds=1.0), "live/vov")
    player = make_player(tmp_path, events, node_context(district_ws, ca=other))
    try:
        player.play(url, volume=100, item_id="mitm")
        last = terminal(events, "mitm")[-1]
        assert last.kind == "error" and "tls" in last.detail, last
        assert [e.kind for e in terminal_or_empty(events)] == []
    finally:
        player.close()


def terminal_or_empty(events: queue.Queue) -> list[PlayerEvent]:
    out = []
    while not events.empty():
        out.append(events.get())
    return out


def test_stalled_live_stream_ends_its_input_within_the_stall_timeout(district_ws, content, tmp_path, events):
    """Connected, then silent: the input ends (the relay logic then reconnects or gives up), with the
    reason, instead of libVLC reporting Playing forever."""
    audio = tone_wav(tmp_path / "vov.wav", seconds=3.0)
    with wave.open(str(audio)) as w:
        one_second = w.getframerate() * w.getsampwidth() * w.getnchannels()
    url = content.publish_live(audio, "live/stall", silent_after=44 + one_second)
    player = make_player(tmp_path, events, node_context(district_ws), stall_timeout=1.0)
    try:
        player.play(url, volume=100, item_id="stall")
        last = terminal(events, "stall")[-1]
        assert last.kind == "ended" and last.detail == "stalled", last
        player.stop()
        assert analyse_wav(player.last_wav_path).sounding_seconds == pytest.approx(1.0, abs=0.3)
    finally:
        player.close()


def test_stopping_a_live_relay_mid_stream_returns_at_once(district_ws, content, tmp_path, events):
    url = content.publish_live(tone_wav(tmp_path / "long.wav", seconds=30.0), "live/long")
    player = make_player(tmp_path, events, node_context(district_ws))
    try:
        player.play(url, volume=100, item_id="long")
        assert events.get(timeout=20).kind == "playing"
        player.stop()
        assert events.get(timeout=5).kind == "stopped"
        assert len(os.listdir(f"/proc/{os.getpid()}/fd")) < 200  # pipes closed, not leaked per relay
    finally:
        player.close()


# --- the real daemon -----------------------------------------------------------------------------------

def test_live_command_relays_the_district_https_stream_and_a_stall_is_a_drop(
        district_ws, broker, content, tmp_path, python_exe):
    """A signed live command with an https URL on the district CA: the node relays it (WAV decoded, a
    completed record). Then a relay whose stream goes silent: live_interrupted says 'stalled', the node
    reconnects within the grace, and ends the relay with a failed record (stream_lost)."""
    from provisioning.district.simulator import DistrictSimulator

    sim = DistrictSimulator(district_ws, broker.address)
    watcher = district_probe(broker, district_ws, client_id=f"live-{os.getpid()}-{time.monotonic_ns()}")
    cfg = write_node_config(tmp_path / "node.toml", district_ws, NODE, [broker.address], state_dir=tmp_path / "state")
    node = NodeProcess(cfg, python_exe)
    try:
        watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online") is True, 20)
        # libVLC probes a WAV stream for ~2 s before it reports playing: a 9 s relay of a longer stream.
        url = content.publish_live(tone_wav(tmp_path / "vov.wav", seconds=12.0), "live/vov")
        good = sim.send("live", {"url": url, "max_duration": 9, "level": "normal", "grace": 3}, [NODE])
        _, record = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o.get("kind") == "play"
                                     and o.get("command_id") == good, 60)
        assert record["result"] == "completed" and record["seconds"] >= 2.0, (record, node.log()[-3000:])
        wav = tmp_path / "state" / "wav"
        heard = max(analyse_wav(p).sounding_seconds for p in wav.glob("*.wav"))
        assert record["seconds"] - 0.5 <= heard <= 9.5, (heard, record)  # the relay's tone, decoded

        audio = tone_wav(tmp_path / "stall.wav", seconds=5.0)
        stall_url = content.publish_live(audio, "live/stall", silent_after=20_000)
        stalled = sim.send("live", {"url": stall_url, "max_duration": 60, "level": "normal", "grace": 4}, [NODE])
        _, drop = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o.get("type") == "live_interrupted"
                                   and o["data"]["command_id"] == stalled, 30)
        assert drop["data"]["detail"] == "stalled"
        _, record = watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/events") and o.get("kind") == "play"
                                     and o.get("command_id") == stalled, 60)
        assert record["result"] == "failed" and record["reason"] == "stream_lost", record
        assert {cn for _, cn in content.requests} == {NODE}  # every connection was the node's own TLS
    finally:
        assert node.terminate() == 0
        node.close()
        watcher.close()
        sim.close()
