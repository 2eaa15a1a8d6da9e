"""The whole node in one process on virtual time: the real loop, intake, verifier, on-air controller,
relay sequencer, store and outbox, with gpiozero's MockFactory pins, a FakePlayer that "plays" each
clip for its signed duration, a FakeBroker and a FakeClock. A day of schedule runs in a second.

Commands are signed with the test district's real keys, so everything a node decides is exercised.
"""

from __future__ import annotations

import datetime as dt
import json
import wave
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from node.adapters.broker import FakeBroker
from node.adapters.system_clock import FakeClock
from node.config import load_config
from node.playback.player import FakePlayer, PlaybackState
from node.wiring import build_app
from provisioning.district import signing
from provisioning.district.workspace import Workspace

# Tomorrow 04:00 UTC = 11:00 in Hanoi: after the test district's keys became valid, whatever the date.
T0 = dt.datetime.combine(dt.date.today() + dt.timedelta(days=1), dt.time(4, 0), tzinfo=dt.timezone.utc)


def make_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * int(seconds * rate))
    return path


class VirtualNode:
    def __init__(self, tmp: Path, ws: Path, node_id: str = "27787-01", *, start: dt.datetime = T0,
                 clock: FakeClock | None = None, state_dir: Path | None = None, extra_toml: str = "",
                 notifier=None):
        self.tmp, self.ws, self.node_id = tmp, ws, node_id
        self.clock = clock or FakeClock(start)
        self.state_dir = state_dir or tmp / "state"
        self.config_path = tmp / "node.toml"
        nd = ws / "nodes" / node_id
        self.config_path.write_text(f"""
[node]
id = "{node_id}"
groups = ["c27787", "d760", "p75"]
simulate = true
[broker]
servers = ["127.0.0.1:1"]
ca_file = "{ws / 'tls' / 'ca.crt'}"
cert_file = "{nd / 'node.crt'}"
key_file = "{nd / 'node.key'}"
[trust]
file = "{ws / 'trust.json'}"
[storage]
state_dir = "{self.state_dir}"
[audio]
output = "wav"
[relays]
amplifier = {{ pin = 17, active_high = true }}
zones = [ {{ name = "north", pin = 27 }}, {{ name = "south", pin = 22 }} ]
warmup = "2s"
tail = "1s"
idle_hold = "30s"
min_off = "5s"
[inputs]
door = {{ pin = 5, active_high = false }}
mains = {{ pin = 6, active_high = true }}
amp_fault = {{ pin = 13, active_high = false }}
debounce = 0
[modem]
enabled = false
{"" if "[clock]" in extra_toml else "[clock]" + chr(10) + "await_signed = 0   # no district time service here"}
{extra_toml}
""")
        self.cfg = load_config(self.config_path)
        self.pins = MockFactory()
        self.durations: dict[str, float] = {}
        self.app = build_app(self.cfg, clock=self.clock, make_broker=lambda **kw: FakeBroker(**kw),
                             pin_factory=self.pins, player=_player_for(self), notifier=notifier)
        self.broker: FakeBroker = self.app.broker
        self.player: FakePlayer = self.app.player
        self.district = Workspace.load(ws)
        self.app.start()
        self.run(0)

    # --- virtual time ----------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        """Advance virtual time by `seconds`, running every timer and event in order."""
        loop = self.app.loop
        target = self.clock.monotonic() + seconds
        while True:
            loop.drain()
            deadline = loop._timers[0][0] if loop._timers else None  # noqa: SLF001 - the harness owns the loop
            if deadline is None or deadline > target:
                break
            if deadline > self.clock.monotonic():
                self.clock.advance(deadline - self.clock.monotonic())
            loop.run_once(max_wait=0)
        if target > self.clock.monotonic():
            self.clock.advance(target - self.clock.monotonic())
        loop.drain()

    def run_until(self, wall: dt.datetime) -> None:
        self.run((wall - self.clock.wall()).total_seconds())

    # --- district side ---------------------------------------------------------------------------
    def clip(self, name: str, seconds: float) -> dict:
        """A clip in the node's cache (as if downloaded) and its signed fields."""
        path = make_wav(self.tmp / f"{name}.wav", seconds)
        fields = signing.content_fields(path, duration=seconds)
        self.app.cache.import_file(path, fields["sha256"], fields["length"], name, "wav")
        self.durations[fields["sha256"]] = seconds
        return {"content_id": name, **fields, "url": None}

    def send(self, kind: str, body: dict, targets=None, *, valid_for: float = 3600, keys=None,
             at: dt.datetime | None = None, **times) -> str:
        """Sign (at `at`, default the node's wall clock) and deliver a command; returns its id."""
        command = signing.build_command(kind, body, targets=targets or [self.node_id],
                                        issued_at=at or self.clock.wall(),
                                        valid_for=dt.timedelta(seconds=valid_for), **times)
        envelope = signing.sign_command(command, keys if keys is not None else self.district.signing_keys(command))
        self.last_envelope = envelope
        self.deliver(envelope)
        return command["id"]

    def answer_time(self, at: dt.datetime | None = None, radius_ms: int = 200, delay: float = 0.1) -> bytes:
        """Act as the district time service: sign `at` (default the node's wall clock) for the node's
        latest time request, `delay` seconds later, and deliver it on the node's time topic."""
        from provisioning.district.timeservice import TimeSigner, time_keys

        requests = [p for t, p, _, _ in self.broker.published if t == f"spk/node/{self.node_id}/time/req"]
        assert requests, "the node has not asked for time"
        self.run(delay)
        answer = TimeSigner(time_keys(self.district), radius_ms).answer(self.node_id, requests[-1],
                                                                        at or self.clock.wall())
        self.broker.deliver(f"spk/node/{self.node_id}/time", answer)
        self.run(0)
        return answer

    def deliver(self, envelope: bytes) -> None:
        self.broker.deliver(f"spk/node/{self.node_id}/cmd", envelope)
        self.run(0)

    def play(self, clip: dict, level: str = "normal", **kw) -> str:
        body = {**clip, "level": level, "volume": None, "start_at": kw.pop("start_at", None), "zones": None}
        return self.send("play", body, **kw)

    # --- observations ----------------------------------------------------------------------------
    def records(self) -> list[dict]:
        return [p for p in self.events_published() if p.get("kind") == "play"]

    def events(self, type_: str | None = None) -> list[dict]:
        return [p for p in self.events_published()
                if p.get("kind") == "event" and (type_ is None or p["type"] == type_)]

    def events_published(self) -> list[dict]:
        return [json.loads(p) for t, p, _, _ in self.broker.published if t.endswith("/events")]

    def relay_history(self) -> list[tuple[float, str, bool]]:
        return list(self.app.relays.history)

    def set_input(self, name: str, active: bool, timeout: float = 2.0) -> None:
        """Drive a cabinet input and wait (real time) until the node's loop has seen the debounced change:
        gpiozero and the debouncer run on their own threads, not on virtual time."""
        import time

        spec = getattr(self.cfg.inputs, name)
        pin = self.pins.pin(spec.pin)
        pin.drive_high() if active == spec.active_high else pin.drive_low()
        deadline = time.monotonic() + timeout
        while self.app.health.inputs.get(name) != active:
            if time.monotonic() > deadline:
                raise TimeoutError(f"input {name} never became {active}")
            time.sleep(0.005)
            self.run(0)

    def pin(self, number: int) -> bool:
        return bool(self.pins.pin(number).state)

    def bug_reports(self) -> list[dict]:
        """Events that mean a bug in the node, whatever the test sent: a handler that raised (only
        possible with a non-strict loop) or a verifier check that crashed (internal_error)."""
        return [e for e in self.events() if e["type"] == "handler_failed"
                or (e["type"] == "rejected" and e["data"].get("reason") == "internal_error")]

    def close(self, *, expect_bug_reports: bool = False) -> None:
        self.app.loop.stop()
        self.app.shutdown()
        self.app.close()
        if not expect_bug_reports:
            assert self.bug_reports() == [], "the node reported a bug of its own"


def _player_for(node: VirtualNode):
    """A FakePlayer that ends each clip after its signed duration, on virtual time."""

    class TimedFakePlayer(FakePlayer):
        answering = True  # False: like a stream server that never answers (libVLC: open_failed after ~1 s)

        def __init__(self):
            super().__init__(lambda ev: node.app.loop.post(ev), auto_playing=False, clock=node.clock.monotonic)

        def play(self, source, *, volume, item_id, start_at=0.0, stall_timeout=None):
            super().play(source, volume=volume, item_id=item_id, start_at=start_at, stall_timeout=stall_timeout)
            if not self.answering:
                node.app.loop.call_later(1.0, lambda: self.current_item == item_id
                                         and self.drive_error(item_id, "open_failed"))
                return
            self.drive_playing(item_id)
            sha = Path(source).stem.split(".")[0]
            length = node.durations.get(sha)
            if length is not None:
                node.app.loop.call_later(max(0.0, length - start_at), lambda: self._maybe_end(item_id))

        def _maybe_end(self, item_id):
            if self.current_item == item_id and self.state is PlaybackState.PLAYING:
                self.drive_end(item_id)

    return TimedFakePlayer()
