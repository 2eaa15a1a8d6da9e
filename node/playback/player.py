"""The audio player port: one abstract API, the libVLC implementation, and a fake that enforces the protocol.

Protocol (both implementations enforce it, so a loop bug shows up in tests with the fake):
  * `play()` is only allowed when nothing is OPENING/PLAYING; call `stop()` first to replace an item
    (`PlayerMisuse` otherwise). This keeps "who preempted whom" a decision of the arbiter, not the player.
  * Every `play()` ends in exactly one terminal event for that item_id: "ended", "error" or "stopped".
    "playing" is posted once audio output has started.
  * Events are posted through `post_event` from ANY thread (libVLC's event thread, a pump thread or the
    caller's). The receiver must only queue them; the node loop reacts later.
  * libVLC is never called from inside a libVLC event callback (that deadlocks libVLC 3): the callbacks
    only put raw events on an internal queue; a pump thread owned by VlcPlayer interprets them.
"""

from __future__ import annotations

import abc
import enum
import itertools
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node.errors import DeviceError


class PlaybackState(enum.Enum):
    STOPPED = "stopped"
    OPENING = "opening"
    PLAYING = "playing"
    ENDED = "ended"
    ERROR = "error"


ACTIVE_STATES = (PlaybackState.OPENING, PlaybackState.PLAYING)


@dataclass(frozen=True)
class PlayerEvent:
    """What happened to one play. kind: "playing" | "ended" | "error" | "stopped".

    detail for "error": "open_failed" (libVLC EncounteredError), "no_audio" (the input ended without one
    decoded audio buffer: undecodable file, empty stream).
    """

    item_id: str
    kind: str
    detail: str
    at_monotonic: float


class PlayerMisuse(RuntimeError):
    """The caller broke the player protocol (a programming error, not a device fault)."""


class Player(abc.ABC):
    """Abstract player. Methods are called from the one node loop thread."""

    def __init__(self, post_event: Callable[[PlayerEvent], None]):
        self._post_event = post_event
        self._state = PlaybackState.STOPPED
        self._item: str | None = None

    @abc.abstractmethod
    def play(self, source: str, *, volume: int, item_id: str, start_at: float = 0.0,
             stall_timeout: float | None = None) -> None:
        """Start `source` (local path, or an https live URL) at `volume` 0..100, `start_at` seconds in.
        `stall_timeout`: for a live URL, seconds without a byte after which its input ends."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the current item (posts "stopped" for it); a no-op when nothing is active."""

    @abc.abstractmethod
    def set_volume(self, volume: int) -> None:
        """Change the volume (0..100) of the current and following items."""

    @property
    def state(self) -> PlaybackState:
        return self._state

    @property
    def current_item(self) -> str | None:
        """item_id of the last play() (even after it ended), None before the first play."""
        return self._item

    @abc.abstractmethod
    def position(self) -> float:
        """Seconds into the current item's media (0.0 when unknown)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and release everything; the player cannot be used afterwards."""


def _check_volume(volume: int) -> int:
    if not isinstance(volume, int) or not 0 <= volume <= 100:
        raise PlayerMisuse(f"volume must be an int 0..100, got {volume!r}")
    return volume


# --------------------------------------------------------------------------------------------- libVLC

_VLC_RAW_EVENTS = {
    "MediaPlayerPlaying": "playing",
    "MediaPlayerEndReached": "end",
    "MediaPlayerEncounteredError": "error",
    "MediaPlayerESAdded": "track",  # the demuxer found an elementary stream: the input is decodable
}


class VlcPlayer(Player):
    """libVLC 3 player.

    output="alsa": one libVLC instance for the life of the player, audio to ALSA `device`.
    output="wav":  audio is written by libVLC's afile module (WAV header included, it is the module's
                   default) to `wav_path`; "{item_id}" in wav_path is replaced per play, so each item gets
                   its own file. The afile file name is an instance option, so each play gets a new
                   libVLC instance (creation costs a few milliseconds). afile runs faster than real time.
    Volume: libVLC applies it as a software gain in the ALSA output; the afile module has no mixer, so
    in "wav" mode the WAV holds the unscaled signal (set_volume is still accepted and remembered).
    Streams (http/https) use a small network cache so a live relay starts and fails fast; an end of
    stream or an error posts "ended"/"error". A stream that stays connected but sends nothing is NOT
    detected here (libVLC keeps reporting Playing): the loop's slot deadline bounds it.
    """

    def __init__(self, post_event: Callable[[PlayerEvent], None], *, output: str = "alsa",
                 device: str = "default", wav_path: str | Path | None = None, extra_args: tuple = (),
                 network_caching_ms: int = 300, open_stream: Callable | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(post_event)
        import vlc  # imported here so modules that only need the fake do not need libVLC installed

        self._vlc = vlc
        if output not in ("alsa", "wav"):
            raise PlayerMisuse(f"output must be 'alsa' or 'wav', got {output!r}")
        if output == "wav" and not wav_path:
            raise PlayerMisuse("output='wav' needs wav_path")
        self._output = output
        self._wav_path = str(wav_path) if wav_path else None
        self._base_args = ["--no-video", "--quiet", "--no-xlib",
                           f"--network-caching={int(network_caching_ms)}", *extra_args]
        self._device = device
        self._clock = clock
        self._lock = threading.RLock()
        self._raw: queue.Queue = queue.Queue()
        self._generation = itertools.count(1)
        self._gen = 0
        self._item: str | None = None
        self._state = PlaybackState.STOPPED
        self._volume = 100
        self._instance = None
        self._mplayer = None
        self._media = None
        self._last_wav: Path | None = None
        self._track_seen = False
        self._closed = False
        self._open_stream = open_stream  # url, stall_timeout -> node.content.live.LiveStream
        self._stream = None
        if output == "alsa":
            self._instance = self._new_instance(["--aout=alsa", f"--alsa-audio-device={device}"])
        self._pump = threading.Thread(target=self._pump_loop, name="vlc-events", daemon=True)
        self._pump.start()

    # -- public API (node loop thread) --

    @property
    def last_wav_path(self) -> Path | None:
        """The WAV file the last play() wrote to (output="wav" only)."""
        return self._last_wav

    def play(self, source: str, *, volume: int, item_id: str, start_at: float = 0.0,
             stall_timeout: float | None = None) -> None:
        _check_volume(volume)
        with self._lock:
            if self._closed:
                raise PlayerMisuse("player is closed")
            if self._state in ACTIVE_STATES:
                raise PlayerMisuse(
                    f"play({item_id!r}) while {self._item!r} is {self._state.value}; stop() first")
            self._release_media()
            if self._output == "wav":
                path = Path(self._wav_path.replace("{item_id}", item_id))
                path.parent.mkdir(parents=True, exist_ok=True)
                self._last_wav = path
                self._instance = self._new_instance(
                    ["--aout=afile", f"--audiofile-file={path}", "--audiofile-format=s16", "--audiofile-wav"])
            if "://" in str(source):
                # Network input is opened by the node (node.content.live), never by libVLC.
                if self._open_stream is None:
                    raise PlayerMisuse(f"no live stream opener: cannot play {str(source)[:80]}")
                self._stream = self._open_stream(str(source), stall_timeout)
                media = self._instance.media_new(self._stream.mrl)
            else:
                media = self._instance.media_new(str(source))
            if start_at > 0:
                media.add_option(f":start-time={start_at:.3f}")
            mplayer = self._instance.media_player_new()
            mplayer.set_media(media)
            gen = next(self._generation)
            manager = mplayer.event_manager()
            for vlc_name, raw_kind in _VLC_RAW_EVENTS.items():
                manager.event_attach(getattr(self._vlc.EventType, vlc_name), self._on_vlc_event,
                                     gen, raw_kind)
            self._gen, self._item, self._media, self._mplayer = gen, item_id, media, mplayer
            self._track_seen = False
            self._volume = volume
            mplayer.audio_set_volume(volume)
            self._state = PlaybackState.OPENING
            if mplayer.play() != 0:
                self._state = PlaybackState.ERROR
                self._post(item_id, "error", "open_failed")

    def stop(self) -> None:
        with self._lock:
            item, was_active = self._item, self._state in ACTIVE_STATES
            self._gen = 0  # late events from the stopped media are ignored
            self._release_media()
            if was_active:
                self._state = PlaybackState.STOPPED
                self._post(item, "stopped", "")

    def set_volume(self, volume: int) -> None:
        _check_volume(volume)
        with self._lock:
            self._volume = volume
            if self._mplayer is not None:
                self._mplayer.audio_set_volume(volume)

    def position(self) -> float:
        with self._lock:
            if self._mplayer is None:
                return 0.0
            ms = self._mplayer.get_time()
            return max(ms, 0) / 1000.0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.stop()
            self._closed = True
            if self._instance is not None:
                self._instance.release()
                self._instance = None
        self._raw.put(None)
        self._pump.join(timeout=5)

    # -- internals --

    def _new_instance(self, output_args: list[str]):
        if self._output == "wav" and self._instance is not None:
            self._instance.release()
        instance = self._vlc.Instance([*self._base_args, *output_args])
        if instance is None:
            raise DeviceError(f"libVLC could not start with arguments {self._base_args + output_args}")
        return instance

    def _release_media(self) -> None:
        # stop() on libVLC 3 is synchronous: when it returns the afile WAV header is final. A live input
        # is ended first (its pipe closed), so libVLC's input thread is not left waiting for bytes.
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.end_input()
        if self._mplayer is not None:
            self._mplayer.stop()
            self._mplayer.release()
            self._mplayer = None
        if self._media is not None:
            self._media.release()
            self._media = None
        if stream is not None:
            stream.close()

    def _on_vlc_event(self, _event, gen: int, raw_kind: str) -> None:
        # libVLC's thread: only post, never call libVLC here.
        self._raw.put((gen, raw_kind, self._clock()))

    def _post(self, item_id: str | None, kind: str, detail: str) -> None:
        self._post_event(PlayerEvent(item_id or "", kind, detail, self._clock()))

    def _pump_loop(self) -> None:
        while True:
            raw = self._raw.get()
            if raw is None:
                return
            with self._lock:
                self._interpret(*raw)

    def _interpret(self, gen: int, raw_kind: str, at: float) -> None:
        if gen != self._gen or self._state not in ACTIVE_STATES:
            return  # a stopped item's late event, or a second terminal event (EndReached after error)
        item = self._item
        if raw_kind == "track":
            self._track_seen = True
            return
        if raw_kind == "playing":
            if self._state is PlaybackState.OPENING:
                self._state = PlaybackState.PLAYING
                self._post_event(PlayerEvent(item, "playing", "", at))
            return
        if raw_kind == "error":
            self._state = PlaybackState.ERROR
            why = self._stream.failure if self._stream is not None else None
            self._post_event(PlayerEvent(item, "error", f"open_failed: {why}" if why else "open_failed", at))
            return
        # End of input. libVLC 3 reports an undecodable file (random bytes named .mp3) as Playing +
        # EndReached, so "ended" alone does not mean it sounded. It never adds an elementary stream for
        # such input; the decoder statistics are a second witness (they refresh slowly, so a short
        # good file can end with them still at zero: they cannot be the only test).
        stats = self._vlc.MediaStats()
        decoded = 0
        if self._media is not None and self._media.get_stats(stats):
            decoded = stats.decoded_audio
        if not self._track_seen and decoded == 0:
            self._state = PlaybackState.ERROR
            why = self._stream.failure if self._stream is not None else None
            self._post_event(PlayerEvent(item, "error", f"no_audio: {why}" if why else "no_audio", at))
        else:
            self._state = PlaybackState.ENDED
            why = self._stream.failure if self._stream is not None else None
            self._post_event(PlayerEvent(item, "ended", why or "", at))


# ----------------------------------------------------------------------------------------------- fake

@dataclass(frozen=True)
class FakeCall:
    at: float
    action: str  # "play" | "stop" | "volume" | "playing" | "ended" | "error"
    item_id: str | None
    source: str | None = None
    volume: int | None = None
    start_at: float = 0.0


class FakePlayer(Player):
    """A recording player for loop tests. It enforces the same protocol as VlcPlayer.

    play() posts "playing" at once when `auto_playing` is true (else call drive_playing). The test ends
    items with drive_end / drive_error; position() is clock-based from the (re)start offset.
    """

    def __init__(self, post_event: Callable[[PlayerEvent], None], *, auto_playing: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(post_event)
        self._clock = clock
        self._auto = auto_playing
        self._state = PlaybackState.STOPPED
        self._item: str | None = None
        self._started_at = 0.0
        self._start_offset = 0.0
        self.volume = 100
        self.history: list[FakeCall] = []
        self.closed = False

    def play(self, source: str, *, volume: int, item_id: str, start_at: float = 0.0,
             stall_timeout: float | None = None) -> None:
        _check_volume(volume)
        if self.closed:
            raise PlayerMisuse("player is closed")
        if self._state in ACTIVE_STATES:
            raise PlayerMisuse(f"play({item_id!r}) while {self._item!r} is {self._state.value}; stop() first")
        now = self._clock()
        self._item, self.volume, self._state = item_id, volume, PlaybackState.OPENING
        self._started_at, self._start_offset = now, start_at
        self.history.append(FakeCall(now, "play", item_id, source, volume, start_at))
        if self._auto:
            self.drive_playing(item_id)

    def stop(self) -> None:
        if self._state in ACTIVE_STATES:
            self._finish(self._item, PlaybackState.STOPPED, "stopped", "")
            self.history.append(FakeCall(self._clock(), "stop", self._item))

    def set_volume(self, volume: int) -> None:
        self.volume = _check_volume(volume)
        self.history.append(FakeCall(self._clock(), "volume", self._item, volume=volume))

    def position(self) -> float:
        if self._state is not PlaybackState.PLAYING:
            return self._start_offset if self._state is PlaybackState.OPENING else 0.0
        return self._start_offset + self._clock() - self._started_at

    def close(self) -> None:
        self.stop()
        self.closed = True

    # -- drive / assert helpers for tests --

    def drive_playing(self, item_id: str) -> None:
        self._require(item_id, (PlaybackState.OPENING,))
        self._state = PlaybackState.PLAYING
        self._started_at = self._clock()
        self.history.append(FakeCall(self._started_at, "playing", item_id))
        self._post_event(PlayerEvent(item_id, "playing", "", self._started_at))

    def drive_end(self, item_id: str) -> None:
        self._require(item_id, (PlaybackState.PLAYING,))
        self._finish(item_id, PlaybackState.ENDED, "ended", "")

    def drive_error(self, item_id: str, detail: str = "open_failed") -> None:
        self._require(item_id, ACTIVE_STATES)
        self._finish(item_id, PlaybackState.ERROR, "error", detail)

    def played(self) -> list[str]:
        return [call.item_id for call in self.history if call.action == "play"]

    def assert_played(self, item_ids: list[str]) -> None:
        actual = self.played()
        assert actual == list(item_ids), f"played {actual}, expected {list(item_ids)}"

    def _require(self, item_id: str, states) -> None:
        if item_id != self._item or self._state not in states:
            raise PlayerMisuse(f"{item_id!r} is not the current item in {[s.value for s in states]} "
                               f"(current {self._item!r} is {self._state.value})")

    def _finish(self, item_id: str, state: PlaybackState, kind: str, detail: str) -> None:
        now = self._clock()
        if kind != "stopped":
            self.history.append(FakeCall(now, kind, item_id))
        self._state = state
        self._post_event(PlayerEvent(item_id, kind, detail, now))
