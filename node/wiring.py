"""Build the node from its configuration: one real or simulated adapter per outside thing.

Simulation (`--simulate` or node.simulate = true) swaps only what cannot exist on a laptop: GPIO pins
(gpiozero's MockFactory), the sound card (libVLC writes WAV files), the modem (a pty simulator when
modem.port = "sim"). Everything else — broker, TLS, trust, storage, the loop — is the same code.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

from node.adapters.backoff import Backoff
from node.adapters.broker import MqttBroker, tls_context
from node.adapters.store import StateStore
from node.adapters.system_clock import SystemClock
from node.adapters.systemd_notify import Notifier
from node.app import NodeApp
from node.errors import ConfigError, DeviceError, HardwareUnavailable, RemoteDataError
from node.filemodes import private_dir, private_files
from node.loop import EventLoop
from node.service import settings
from node.trust.commands import Limits

log = logging.getLogger(__name__)
MB = 1024 * 1024


def _check_files(cfg) -> None:
    problems = []
    for section, key in (("broker", "ca_file"), ("broker", "cert_file"), ("broker", "key_file"), ("trust", "file")):
        path = getattr(getattr(cfg, section), key)
        if not Path(path).is_file():
            problems.append(f"{section}.{key}: {path} does not exist")
    if problems:
        raise ConfigError(problems)


def runtime_dir(cfg) -> Path:
    """tmpfs on a node (/run/speaker-node: status file and daemon lock, no SD wear)."""
    return Path(cfg.storage.runtime_dir)


def _private_dir_if_possible(path) -> Path:
    """private_dir, but a read-only or failing card only logs: the stores then run degraded."""
    try:
        return private_dir(path)
    except OSError as exc:
        log.error("directory %s unusable: %s", path, exc)
        return Path(path)


def _private_files_if_possible(path) -> None:
    try:
        private_files(path)
    except OSError as exc:
        log.error("cannot make %s private: %s", path, exc)


def hold_daemon_lock(cfg):
    """One daemon per node: an exclusive flock on <runtime_dir>/daemon.lock, held for the process's
    life (the kernel drops it when the process dies, even by kill -9). selftest checks it too."""
    import fcntl
    import os

    run = private_dir(runtime_dir(cfg))
    fd = os.open(run / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError([f"another speaker-node is already running for {cfg.node.id} "
                           f"(lock {run / 'daemon.lock'} is held)"]) from None
    return fd


def build_app(cfg, *, clock=None, notifier=None, make_broker=None, pin_factory=None, player=None) -> NodeApp:
    state_dir = _private_dir_if_possible(cfg.storage.state_dir)
    lock_fd = hold_daemon_lock(cfg)
    clock = clock or SystemClock(cfg.clock.ntp_sync_file)
    loop = EventLoop(clock.monotonic)
    # Never raises for the medium: a damaged state.db is rebuilt, a full or read-only one runs in memory.
    store = StateStore(state_dir / "state.db")
    _private_files_if_possible(state_dir / "state.db")
    cfg = settings.apply_stored(cfg, store)  # signed remote settings accepted earlier
    if make_broker is None:
        _check_files(cfg)
        try:
            tls = tls_context(cfg.broker.ca_file, cfg.broker.cert_file, cfg.broker.key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError([f"broker TLS files: {exc}"]) from None

        def make_broker(**kw):
            return MqttBroker(
                client_id=cfg.node.id, servers=cfg.broker.servers, tls=tls, keepalive=cfg.broker.keepalive,
                session_expiry=cfg.broker.session_expiry, failback_interval=cfg.broker.failback_interval,
                backoff=Backoff(cfg.broker.reconnect_min, cfg.broker.reconnect_max), **kw)

    birth = store.next_birth()
    parts = build_parts(cfg, loop=loop, clock=clock, store=store, birth=birth, pin_factory=pin_factory,
                        player=player)
    app = NodeApp(cfg, loop=loop, store=store, notifier=notifier or Notifier(), clock=clock, birth=birth,
                  make_broker=make_broker, parts=parts)

    def close():
        import os

        store.close()
        os.close(lock_fd)

    app.close = close
    return app


def build_parts(cfg, *, loop, clock, store, birth, pin_factory=None, player=None):
    from node.content.cache import ContentCache
    from node.content.download import Downloader, DownloadLimits
    from node.playback.relays import Inputs, InputSpec, RelayBoard, RelaySpec
    from node.reporting.heartbeat import encode
    from node.service.fetcher import Fetcher
    from node.service.health import HealthService, ModemPoller, request_reboot
    from node.service.intake import CommandIntake, TrustedTime, TrustKeeper, load_clock_trust
    from node.service.onair import OnAir
    from node.service.parts import NodeParts
    from node.service.storage import StorageWatch, open_outbox, restore_documents

    closers = []
    run_dir = private_dir(runtime_dir(cfg))
    state_dir = Path(cfg.storage.state_dir)
    try:
        trust = TrustKeeper(Path(cfg.trust.file).read_bytes(), store)
    except OSError as exc:
        raise ConfigError([f"trust.file: {exc}"]) from None
    except RemoteDataError as exc:
        raise ConfigError([f"trust.file: {cfg.trust.file} is not a valid root trust document ({exc})"]) from None

    if pin_factory is None and cfg.node.simulate:
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()
    relays = inputs = None
    try:
        if cfg.relays.amplifier is not None:
            relays = RelayBoard(RelaySpec(cfg.relays.amplifier.pin, cfg.relays.amplifier.active_high),
                                {z.name: RelaySpec(z.pin, z.active_high) for z in cfg.relays.zones},
                                pin_factory=pin_factory, clock=clock.monotonic)
            closers.append(relays.close)
        specs = {name: InputSpec(spec.pin, spec.active_high) for name in ("door", "mains", "amp_fault",
                                                                          "relay_feedback")
                 if (spec := getattr(cfg.inputs, name)) is not None}
        if specs:
            inputs = Inputs(specs, post_event=loop.post, pin_factory=pin_factory, debounce=cfg.inputs.debounce)
            closers.append(inputs.close)
            if cfg.node.simulate:
                _simulated_inputs_at_rest(pin_factory, cfg)
                time.sleep(cfg.inputs.debounce * 2 + 0.02)  # let the simulated cabinet settle
    except HardwareUnavailable:
        raise
    except DeviceError as exc:
        raise ConfigError([f"relays/inputs: {exc}"]) from None

    downloader = Downloader(ca_file=cfg.broker.ca_file, cert_file=cfg.broker.cert_file,
                            key_file=cfg.broker.key_file, limits=DownloadLimits(max_bytes=cfg.audio.max_audio_mb * MB))
    if player is None:
        from node.content.live import LiveOpener
        from node.playback.player import VlcPlayer

        # Live relays are opened by the node with the downloads' TLS context (district CA, our client
        # certificate) and fed to libVLC through a pipe: libVLC never opens a network connection.
        player = VlcPlayer(loop.post, output=cfg.audio.output, device=cfg.audio.device,
                           wav_path=Path(cfg.audio.wav_dir) / "{item_id}.wav",
                           open_stream=LiveOpener(downloader.context))
    closers.append(player.close)
    cache = ContentCache(_private_dir_if_possible(cfg.storage.cache_dir), cfg.storage.cache_quota_mb * MB,
                         state_dir / "cache.db")
    _private_files_if_possible(state_dir / "cache.db")
    try:
        cache.sweep()
    except OSError as exc:  # a read-only cache keeps its stale partials until the medium is back
        log.error("cache sweep skipped: %s", exc)
    closers.append(cache.close)
    fetcher = Fetcher(downloader, loop.post)
    closers.append(fetcher.close)
    outbox, outbox_fault = open_outbox(state_dir / "outbox.db", node_id=cfg.node.id,
                                       max_rows=cfg.health.outbox_max_rows,
                                       max_event_rows=min(20_000, cfg.health.outbox_max_rows),
                                       resend_after=cfg.health.resend_after, resend_max=cfg.health.resend_max)
    closers.append(outbox.close)
    _private_files_if_possible(state_dir / "outbox.db")

    limits = Limits(max_envelope_bytes=cfg.trust.max_message_bytes, audio_max_bytes=cfg.audio.max_audio_mb * MB,
                    audio_max_duration=cfg.audio.max_duration, skew_seconds=cfg.trust.clock_skew)
    restore_documents(store, trust, limits)  # a rebuilt state.db gets the safe copy's schedule, verified
    parts_ref: dict = {}
    clock_trust = load_clock_trust(store)

    def emit_event(t, d):
        parts_ref["parts"].emit_event(t, d)

    def emit_record(r):
        parts_ref["parts"].emit_record(r)

    onair = OnAir(cfg=cfg, loop=loop, clock=clock, now_trusted=TrustedTime(clock, clock_trust).now, player=player,
                  relays=relays, inputs_state=lambda: parts_ref["parts"].health.inputs, cache=cache, fetcher=fetcher,
                  store=store,
                  emit_event=emit_event, emit_record=emit_record, max_queue=cfg.audio.max_queue, limits=limits)
    from node.update.wire import build_update_service

    def update_health() -> dict[str, bool]:
        """What a new version must show before it is committed (the self-test's core, live)."""
        parts = parts_ref.get("parts")
        app = parts.app if parts else None
        return {"broker_connected": bool(app and app.link.connected),
                "status_published": bool(app and app.status_published),
                "trust_loaded": trust.document is not None,
                "player_ready": player is not None}

    def make_downloader(max_bytes):
        return Downloader(ca_file=cfg.broker.ca_file, cert_file=cfg.broker.cert_file,
                          key_file=cfg.broker.key_file, limits=DownloadLimits(max_bytes=max_bytes))

    updates, restarter = build_update_service(
        cfg, loop=loop, clock=clock, emit=emit_event, trust_keeper=trust, onair=onair,
        now_trusted=TrustedTime(clock, clock_trust).now, health_checks=update_health,
        downloader_factory=make_downloader, request_install=lambda: _request_install(run_dir))
    intake = CommandIntake(node_id=cfg.node.id, groups=cfg.all_groups, store=store, trust=trust, clock=clock,
                           clock_trust=clock_trust, limits=limits, max_message_bytes=cfg.trust.max_message_bytes,
                           dispatcher=onair, emit=emit_event, on_update=updates.on_command)
    onair.read_stored = intake.read_stored

    def publish_full(payload):
        parts_ref["parts"].app.publish_status(payload)

    def publish_delta(payload):
        app = parts_ref["parts"].app
        app.broker.publish(app.topics.delta, encode(payload), qos=0)

    modem_poller = None
    power_cycle = None
    if cfg.modem.power_cycle is not None:
        power_cycle = _power_cycler(cfg.modem.power_cycle, pin_factory, loop)
    health = HealthService(cfg=cfg, birth=birth, clock=clock, publish_full=publish_full,
                           publish_delta=publish_delta, emit_event=emit_event,
                           collect=lambda: parts_ref["parts"].collect(), runtime_dir=run_dir,
                           power_cycle=power_cycle, reboot=lambda: request_reboot(run_dir))
    onair.health = health
    if cfg.modem.enabled:
        open_port = _modem_opener(cfg, closers)
        modem_poller = ModemPoller(open_port, cfg.modem.poll_interval, loop.post)
        health.poller = modem_poller
    if cfg.node.simulate:
        closers.append(_SimControl(run_dir / "sim.sock", pin_factory, cfg).close)
    parts = NodeParts(cfg=cfg, loop=loop, clock=clock, store=store, outbox=outbox, intake=intake, onair=onair,
                      health=health, relays=relays, inputs=inputs, player=player, fetcher=fetcher,
                      modem_poller=modem_poller, closers=closers, updates=updates, restarter=restarter)
    parts_ref["parts"] = parts
    onair.changed = parts.kick
    parts.storage = StorageWatch(loop=loop, store=store, outbox=outbox, outbox_path=state_dir / "outbox.db",
                                 outbox_fault=outbox_fault, cache=cache, emit_event=emit_event,
                                 trusted_now=TrustedTime(clock, clock_trust).now, retry_s=cfg.storage.fault_retry)
    parts.storage.on_change = parts.kick
    closers.append(parts.storage.close)
    return parts


def _request_install(run_dir: Path) -> None:
    """Ask the root-only speaker-update.service (a path unit watches this file) to install and switch."""
    request = run_dir / "update.request"
    request.write_text("install\n")


def _modem_opener(cfg, closers):
    from node.modem.at import ATPort

    port = cfg.modem.port
    if port == "sim":
        if not cfg.node.simulate:
            raise ConfigError(['modem.port: "sim" needs simulation (node.simulate = true or --simulate)'])
        from node.modem.simulator import ModemSimulator

        simulator = ModemSimulator("ec25", link=Path(runtime_dir(cfg)) / "ttyModemAT")
        closers.append(simulator.close)
        port = simulator.port

    def open_port():
        at = ATPort(port, cfg.modem.baud)
        at.open()
        return at

    return open_port


def _power_cycler(spec, pin_factory, loop):
    """Cut the modem's power for 5 s through its relay (non-blocking: the loop switches it back)."""
    from gpiozero import OutputDevice

    device = OutputDevice(spec.pin, active_high=spec.active_high, initial_value=True, pin_factory=pin_factory)

    def cycle():
        device.off()
        loop.call_later(5.0, device.on)

    return cycle


def _simulated_inputs_at_rest(pin_factory, cfg) -> None:
    """A simulated cabinet starts closed, with mains present and no amplifier fault. (Driven after the
    input devices exist: creating one sets the mock pin's pull, which resets its level.)"""
    at_rest = {"door": False, "mains": True, "amp_fault": False, "relay_feedback": False}
    for name, active in at_rest.items():
        spec = getattr(cfg.inputs, name)
        if spec is not None:
            _drive(pin_factory, spec, active)


def _drive(pin_factory, spec, active: bool) -> None:
    pin = pin_factory.pin(spec.pin)
    high = active if spec.active_high else not active
    pin.drive_high() if high else pin.drive_low()


class _SimControl:
    """Simulation only: a Unix datagram socket that lets the demo (or a person) act on the simulated
    cabinet: {"input": "door", "active": true} opens the door."""

    def __init__(self, path: Path, pin_factory, cfg):
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path, self.pin_factory, self.cfg = path, pin_factory, cfg
        self.thread = threading.Thread(target=self._run, name="sim-control", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            try:
                msg = json.loads(data)
                spec = getattr(self.cfg.inputs, msg["input"])
                if spec is not None:
                    _drive(self.pin_factory, spec, bool(msg["active"]))
            except (ValueError, KeyError, AttributeError, TypeError) as exc:
                log.warning("sim control: ignored %r (%s)", data[:80], exc)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
