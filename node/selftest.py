"""`speaker-node selftest`: the technician's check at the pole, one line per part, pass or fail.

Every line has a stable id (config, certificate, trust, clock, service, broker, libvlc, modem,
relay:<name>, audio, input:<name>, disk) and, when it fails, says what to look at, in Vietnamese when the locale is
Vietnamese. Exit status: 0 when nothing failed (skipped lines do not fail), 1 when a line failed,
78 when the configuration cannot be loaded, 2 for bad arguments. See docs/selftest.md.

The relay test is silent by default: the amplifier is switched with every zone off, and each zone with
the amplifier off, so no horn sounds. `--audible` plays a 1 s 1 kHz tone through every zone.
While the service runs (it holds an flock on <runtime_dir>/daemon.lock) the GPIO pins and the modem port
belong to it: relays are skipped, inputs and modem readings come from its <runtime_dir>/status.json.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime as dt
import json
import math
import os
import queue
import sys
import tempfile
import time
import wave
from pathlib import Path

from node.config import DEFAULT_PATH, load_config
from node.errors import EX_CONFIG, ConfigError, DeviceError
from node.messages import language, text
from node.selftest_checks import (
    FEEDBACK_SETTLE,
    INPUT_CHECKS,
    CheckResult,
    check_broker,
    check_certificate,
    check_clock,
    check_disk,
    check_inputs,
    check_libvlc,
    check_modem,
    check_trust,
    daemon_running,
    judge_service,
    read_service_status,
    service_properties,
)

AMPLIFIER = "amplifier"
TONE_HZ = 1000.0
TONE_SECONDS = 1.0
TONE_TIMEOUT = 15.0


# --- relays and the audible tone -----------------------------------------------------------------------


def write_tone(
    path: Path, *, freq: float = TONE_HZ, seconds: float = TONE_SECONDS, rate: int = 48000, level: float = 0.5
) -> Path:
    """A mono 16-bit sine WAV with 10 ms fades, so the horns do not click."""
    count, fade = int(rate * seconds), int(rate * 0.01)
    samples = array.array(
        "h",
        (
            int(
                32767
                * level
                * min(1.0, i / fade, (count - 1 - i) / fade)
                * math.sin(2 * math.pi * freq * i / rate)
            )
            for i in range(count)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def play_tone(cfg, say, zone_names: list[str]) -> CheckResult:
    """Play the tone with the node's own player and output; pass when libVLC reports the end."""
    events: queue.Queue = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="speaker-selftest-") as tmp:
        tone = write_tone(Path(tmp) / "tone-1khz.wav")
        try:
            from node.playback.player import VlcPlayer

            player = VlcPlayer(
                events.put,
                output=cfg.audio.output,
                device=cfg.audio.device,
                wav_path=Path(cfg.audio.wav_dir) / "selftest-{item_id}.wav",
            )
        except Exception as exc:  # libVLC missing or broken: ImportError, OSError, NameError, ...
            return CheckResult("audio", False, say("audio_failed", error=exc), say("hint_audio"))
        try:
            player.play(str(tone), volume=cfg.audio.default_volume, item_id="tone")
            deadline = time.monotonic() + TONE_TIMEOUT
            while True:
                try:
                    event = events.get(timeout=max(deadline - time.monotonic(), 0.001))
                except queue.Empty:
                    return CheckResult(
                        "audio", False, say("audio_failed", error="timeout"), say("hint_audio")
                    )
                if event.kind == "ended":
                    break
                if event.kind in ("error", "stopped"):
                    return CheckResult(
                        "audio",
                        False,
                        say("audio_failed", error=event.detail or event.kind),
                        say("hint_audio"),
                    )
        finally:
            player.close()
    output = cfg.audio.output if cfg.audio.output == "wav" else f"{cfg.audio.output} {cfg.audio.device}"
    return CheckResult("audio", True, say("audio_ok", zones=", ".join(zone_names) or "-", output=output))


def _wait_feedback(feedback, want: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while feedback.read()["relay_feedback"] != want:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class _RelayExercise:
    """Switches the relays of one RelayBoard and judges each from its GPIO read-back and the feedback."""

    def __init__(self, cfg, say, board, feedback):
        self.cfg, self.say, self.board, self.feedback = cfg, say, board, feedback
        self.settle = cfg.inputs.debounce + FEEDBACK_SETTLE
        self.pins = {AMPLIFIER: cfg.relays.amplifier.pin, **{z.name: z.pin for z in cfg.relays.zones}}

    def amp(self, on: bool) -> CheckResult | None:
        """Switch the amplifier; a failed CheckResult when it did not follow, else None."""
        self.board.amp_on() if on else self.board.amp_off()
        if self.board.states()[AMPLIFIER] != on:
            return self._fail(AMPLIFIER, "relay_readback", "hint_relay_open")
        if self.feedback is not None and not _wait_feedback(self.feedback, on, self.settle):
            return self._fail(AMPLIFIER, "relay_stuck_off" if on else "relay_stuck_on", "hint_relay_stuck")
        return None

    def zone(self, name: str, on: bool) -> CheckResult | None:
        self.board.zones_on([name]) if on else self.board.zones_off()
        if self.board.states()[name] != on:
            return self._fail(name, "relay_readback", "hint_relay_open")
        return None

    def amp_passed(self) -> CheckResult:
        key = "relay_ok_feedback" if self.feedback is not None else "relay_ok"
        return CheckResult(f"relay:{AMPLIFIER}", True, self.say(key))

    def _fail(self, name: str, detail: str, hint: str) -> CheckResult:
        feedback_pin = self.cfg.inputs.relay_feedback.pin if self.cfg.inputs.relay_feedback else None
        return CheckResult(
            f"relay:{name}", False, self.say(detail, pin=self.pins[name]), self.say(hint, pin=feedback_pin)
        )

    def silent(self) -> list[CheckResult]:
        """Amplifier with every zone off, then each zone with the amplifier off: no sound."""
        self.board.all_off()
        amp = self.amp(True)
        off = self.amp(False)
        results = [amp or off or self.amp_passed()]
        for name in self.board.zone_names:
            problem = self.zone(name, True) or self.zone(name, False)
            results.append(problem or CheckResult(f"relay:{name}", True, self.say("relay_ok")))
        return results + [CheckResult("audio", None, self.say("audio_silent"))]

    def audible(self) -> list[CheckResult]:
        """The production order: amplifier, warm-up, zones, tone, zones off, amplifier off."""
        self.board.all_off()
        amp = self.amp(True)
        time.sleep(self.cfg.relays.warmup)
        zones = []
        for name in self.board.zone_names:
            zones.append(
                self.zone(name, True) or CheckResult(f"relay:{name}", True, self.say("relay_ok_audible"))
            )
        audio = play_tone(self.cfg, self.say, [r.id.split(":", 1)[1] for r in zones if r.ok])
        time.sleep(min(self.cfg.relays.tail, 2.0))
        for index, name in enumerate(self.board.zone_names):
            zones[index] = zones[index] if not zones[index].ok else (self.zone(name, False) or zones[index])
        off = self.amp(False)
        return [amp or off or self.amp_passed(), *zones, audio]


def check_relays(
    cfg, say, *, pin_factory=None, daemon: bool = False, audible: bool = False
) -> list[CheckResult]:
    import warnings

    from node.playback.relays import Inputs, InputSpec, RelayBoard, RelaySpec

    zones = cfg.relays.zones
    ids = [f"relay:{AMPLIFIER}"] + [f"relay:{z.name}" for z in zones]
    audio_skipped = CheckResult("audio", None, say("audio_silent"))
    if daemon:
        skipped = (
            CheckResult("audio", None, say("relay_service"), say("service_hint"))
            if audible
            else audio_skipped
        )
        return [CheckResult(i, None, say("relay_service"), say("service_hint")) for i in ids] + [skipped]
    amp = cfg.relays.amplifier
    if amp is None:
        return (
            [CheckResult(ids[0], None, say("relay_not_configured"))]
            + [CheckResult(i, None, say("relay_no_amplifier")) for i in ids[1:]]
            + [audio_skipped]
        )
    feedback_spec = cfg.inputs.relay_feedback
    board = feedback = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero's pin-factory fallback chatter
            board = RelayBoard(
                RelaySpec(amp.pin, amp.active_high),
                {z.name: RelaySpec(z.pin, z.active_high) for z in zones},
                pin_factory=pin_factory,
            )
            if feedback_spec is not None:
                feedback = Inputs(
                    {"relay_feedback": InputSpec(feedback_spec.pin, feedback_spec.active_high)},
                    post_event=lambda _event: None,
                    pin_factory=pin_factory,
                    debounce=cfg.inputs.debounce,
                )
        exercise = _RelayExercise(cfg, say, board, feedback)
        return exercise.audible() if audible else exercise.silent()
    except DeviceError as exc:
        return [
            CheckResult(i, False, say("relay_open_failed", error=exc), say("hint_relay_open")) for i in ids
        ] + [audio_skipped]
    finally:
        if board is not None:
            board.all_off()
            board.close()
        if feedback is not None:
            feedback.close()


# --- simulated hardware -----------------------------------------------------------------------------


def simulated_pin_factory(cfg, *, feedback_follows: bool = True, active_inputs=("mains",)):
    """gpiozero MockFactory wired like a healthy cabinet: the relay feedback input follows the amplifier
    relay (unless feedback_follows=False: a stuck relay), and each input in `active_inputs` is held at
    its active level by the outside hardware (default: mains present; door closed, no amplifier fault)."""
    from gpiozero.pins.mock import MockFactory, MockPin

    class HeldPin(MockPin):
        """An input wire driven by outside hardware: its pull resistor cannot move it."""

        def __init__(self, factory, info, level=False):
            super().__init__(factory, info)
            self.held = level
            self._change_state(level)

        def _set_pull(self, value):
            super()._set_pull(value)
            self._change_state(self.held)

    class FollowerPin(MockPin):
        """A relay output whose auxiliary contact drives another (input) pin."""

        def __init__(self, factory, info, follower=None, invert=False):
            super().__init__(factory, info)
            self.follower, self.invert = follower, invert

        def _change_state(self, value):
            changed = super()._change_state(value)
            if self.follower is not None and self._function == "output":
                self.follower.drive_high() if value != self.invert else self.follower.drive_low()
            return changed

    factory = MockFactory()
    for name in active_inputs:
        spec = getattr(cfg.inputs, name, None)
        if spec is not None:
            factory.pin(spec.pin, pin_class=HeldPin, level=spec.active_high)
    amp, feedback = cfg.relays.amplifier, cfg.inputs.relay_feedback
    if feedback_follows and amp is not None and feedback is not None:
        follower = factory.pin(feedback.pin)
        factory.pin(
            amp.pin, pin_class=FollowerPin, follower=follower, invert=amp.active_high != feedback.active_high
        )
    return factory


@contextlib.contextmanager
def simulated_modem(profile: str = "ec25"):
    """A pty modem simulator and an ATPort on it, for cfg.modem.port == "sim"."""
    from node.modem.at import ATPort
    from node.modem.simulator import ModemSimulator

    with ModemSimulator(profile) as sim:
        port = ATPort(sim.port, timeout=3.0)
        try:
            yield port
        finally:
            port.close()


# --- all checks ---------------------------------------------------------------------------------------


def run_checks(
    cfg,
    *,
    pin_factory=None,
    modem_port=None,
    now: dt.datetime | None = None,
    locale: str | None = None,
    audible: bool = False,
    service_props=service_properties,
) -> list[CheckResult]:
    """Every check, in order, for a loaded config. Hardware adapters are injected (None = the real ones);
    `locale` is "vi", "en" or a locale name such as "vi_VN.UTF-8" (None = from the environment)."""
    lang = language() if locale is None else ("vi" if locale.lower().startswith("vi") else "en")

    def say(message_id: str, **values) -> str:
        return text(message_id, lang, **values)

    now = now or dt.datetime.now(dt.timezone.utc)
    run_dir = cfg.storage.runtime_dir
    daemon = daemon_running(run_dir)
    service_status = read_service_status(run_dir) if daemon else None
    # The running daemon's own verdict (signed district time, NTP, RTC or cellular: docs/protocol.md §7)
    # is the one that decides commands; without it, the configured NTP flag.
    daemon_clock = (service_status or {}).get("clk") if daemon else None
    synced = bool(daemon_clock.get("ok")) if isinstance(daemon_clock, dict) else (
        bool(cfg.clock.ntp_sync_file) and os.path.exists(cfg.clock.ntp_sync_file))
    relay_ids = [f"relay:{AMPLIFIER}"] + [f"relay:{z.name}" for z in cfg.relays.zones] + ["audio"]
    steps = [
        (["certificate"], lambda: [check_certificate(cfg, say, now, synced)]),
        (["trust"], lambda: [check_trust(cfg, say, now, synced)]),
        (["clock"], lambda: [check_clock(cfg, say, now, synced, daemon_clock)]),
        (["service"], lambda: [judge_service(service_props(), say)]),
        (["broker"], lambda: [check_broker(cfg, say)]),
        (["libvlc"], lambda: [check_libvlc(cfg, say)]),
        (
            ["modem"],
            lambda: [
                check_modem(cfg, say, modem_port=modem_port, daemon=daemon, service_status=service_status)
            ],
        ),
        (relay_ids, lambda: check_relays(cfg, say, pin_factory=pin_factory, daemon=daemon, audible=audible)),
        (
            [f"input:{n}" for n in INPUT_CHECKS],
            lambda: check_inputs(
                cfg, say, pin_factory=pin_factory, daemon=daemon, service_status=service_status
            ),
        ),
        (["disk"], lambda: [check_disk(cfg, say)]),
    ]
    results = [CheckResult("config", True, say("config_ok", path=cfg.source or "-"))]
    for ids, step in steps:
        try:
            results += step()
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the other lines
            error = f"{type(exc).__name__}: {exc}"
            results += [
                CheckResult(i, False, say("internal_error", error=error), say("hint_internal")) for i in ids
            ]
    return results


def all_ok(results: list[CheckResult]) -> bool:
    return all(r.ok is not False for r in results)


def render_json(results: list[CheckResult]) -> str:
    return json.dumps({"ok": all_ok(results), "checks": [r.to_json() for r in results]}, ensure_ascii=False)


def render_table(results: list[CheckResult], lang: str, node_id: str) -> str:
    def label(r: CheckResult) -> str:
        key = "skip" if r.ok is None else "fail" if r.ok is False else "warn" if r.warn else "pass"
        return text(f"status_{key}", lang)

    labels = [label(r) for r in results]
    lw = max(len(s) for s in labels)
    iw = max(len(r.id) for r in results)
    lines = [text("title", lang, node=node_id), ""]
    for r, status in zip(results, labels):
        lines.append(f"  {status:<{lw}}  {r.id:<{iw}}  {r.detail}")
        if r.hint and (r.ok is not True or r.warn):
            lines.append(f"  {'':<{lw}}  {'':<{iw}}  -> {r.hint}")
    failed = [r.id for r in results if r.ok is False]
    lines.append("")
    lines.append(
        text("some_failed", lang, n=len(failed), ids=", ".join(failed))
        if failed
        else text("all_passed", lang)
    )
    return "\n".join(lines)


def _emit(results: list[CheckResult], as_json: bool, lang: str, node_id: str) -> None:
    print(render_json(results) if as_json else render_table(results, lang, node_id), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speaker-node selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_PATH, help="node.toml (default: %(default)s)")
    parser.add_argument(
        "--audible",
        action="store_true",
        help="switch amplifier and zones on and play a 1 s 1 kHz tone (default: silent)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="simulated hardware: gpiozero MockFactory pins, WAV output, pty modem for port 'sim'",
    )
    args = parser.parse_args(argv)
    lang = language()
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        failed = CheckResult(
            "config",
            False,
            text("config_bad", lang, path=args.config, n=len(exc.problems), problems="; ".join(exc.problems)),
            text("config_hint", lang, path=args.config),
        )
        _emit([failed], args.json, lang, "?")
        return EX_CONFIG
    with contextlib.ExitStack() as stack:
        pin_factory = modem_port = None
        if args.simulate or cfg.node.simulate:
            pin_factory = simulated_pin_factory(cfg)
            stack.callback(pin_factory.reset)
            cfg = cfg.with_values(audio={"output": "wav"})
            if cfg.modem.enabled and cfg.modem.port == "sim" and not daemon_running(cfg.storage.runtime_dir):
                modem_port = stack.enter_context(simulated_modem())
        results = run_checks(
            cfg, pin_factory=pin_factory, modem_port=modem_port, locale=lang, audible=args.audible
        )
    _emit(results, args.json, lang, cfg.node.id)
    return 0 if all_ok(results) else 1
