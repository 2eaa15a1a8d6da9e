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
from node.errors import ConfigError, DeviceError, HardwareUnavailable, RemoteDataError
from node.filemodes import private_dir, private_files

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


def private_dir_if_possible(path) -> Path:
    """private_dir, but a read-only or failing card only logs: the stores then run degraded."""
    try:
        return private_dir(path)
    except OSError as exc:
        log.error("directory %s unusable: %s", path, exc)
        return Path(path)


def private_files_if_possible(path) -> None:
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


def build_app(cfg, **injected):
    """The node, built in order (node.app.NodeApp); `injected` replaces adapters in tests and benchmarks:
    clock, notifier, make_broker, pin_factory, player."""
    from node.app import NodeApp

    return NodeApp(cfg, **injected)


# --- one factory per outside thing, called in order by NodeApp -------------------------------------
def broker_factory(cfg):
    """The real MQTT client over mutual TLS (the files are checked here: a missing one is config)."""
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

    return make_broker


def trust_keeper(cfg, store):
    from node.service.intake import TrustKeeper

    try:
        return TrustKeeper(Path(cfg.trust.file).read_bytes(), store)
    except OSError as exc:
        raise ConfigError([f"trust.file: {exc}"]) from None
    except RemoteDataError as exc:
        raise ConfigError([f"trust.file: {cfg.trust.file} is not a valid root trust document ({exc})"]) from None


def simulated_pins(cfg):
    """gpiozero's MockFactory in simulation; None on a Pi (gpiozero picks the real pin library)."""
    if not cfg.node.simulate:
        return None
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


def relay_board(cfg, pin_factory, clock):
    from node.playback.relays import RelayBoard, RelaySpec

    if cfg.relays.amplifier is None:
        return None
    try:
        return RelayBoard(RelaySpec(cfg.relays.amplifier.pin, cfg.relays.amplifier.active_high),
                          {z.name: RelaySpec(z.pin, z.active_high) for z in cfg.relays.zones},
                          pin_factory=pin_factory, clock=clock.monotonic)
    except HardwareUnavailable:
        raise  # not configuration: the daemon exits 69 and is restarted
    except DeviceError as exc:
        raise ConfigError([f"relays/inputs: {exc}"]) from None


def cabinet_inputs(cfg, pin_factory, loop):
    from node.playback.relays import Inputs, InputSpec

    specs = {name: InputSpec(spec.pin, spec.active_high)
             for name in ("door", "mains", "amp_fault", "relay_feedback")
             if (spec := getattr(cfg.inputs, name)) is not None}
    if not specs:
        return None
    try:
        inputs = Inputs(specs, post_event=loop.post, pin_factory=pin_factory, debounce=cfg.inputs.debounce)
    except HardwareUnavailable:
        raise
    except DeviceError as exc:
        raise ConfigError([f"relays/inputs: {exc}"]) from None
    if cfg.node.simulate:
        _simulated_inputs_at_rest(pin_factory, cfg)
        time.sleep(cfg.inputs.debounce * 2 + 0.02)  # let the simulated cabinet settle
    return inputs


def audio_player(cfg, loop, downloader):
    from node.content.live import LiveOpener
    from node.playback.player import VlcPlayer

    # Live relays are opened by the node with the downloads' TLS context (district CA, our client
    # certificate) and fed to libVLC through a pipe: libVLC never opens a network connection.
    return VlcPlayer(loop.post, output=cfg.audio.output, device=cfg.audio.device,
                     wav_path=Path(cfg.audio.wav_dir) / "{item_id}.wav", open_stream=LiveOpener(downloader.context))


def content_cache(cfg):
    from node.content.cache import ContentCache

    cache = ContentCache(private_dir_if_possible(cfg.storage.cache_dir), cfg.storage.cache_quota_mb * MB,
                         Path(cfg.storage.state_dir) / "cache.db")
    private_files_if_possible(Path(cfg.storage.state_dir) / "cache.db")
    try:
        cache.sweep()
    except OSError as exc:  # a read-only cache keeps its stale partials until the medium is back
        log.error("cache sweep skipped: %s", exc)
    except BaseException:
        cache.close()
        raise
    return cache


def downloader(cfg, max_bytes: int):
    from node.content.download import Downloader, DownloadLimits

    return Downloader(ca_file=cfg.broker.ca_file, cert_file=cfg.broker.cert_file, key_file=cfg.broker.key_file,
                      limits=DownloadLimits(max_bytes=max_bytes))


def fetcher(loop, downloader):
    from node.service.fetcher import Fetcher

    return Fetcher(downloader, loop.post)


def modem_poller(cfg, loop, closing):
    """The modem's poller thread (started by NodeApp.start), or None; `closing` (an ExitStack) gets the
    modem simulator's close in simulation."""
    from node.service.health import ModemPoller

    if not cfg.modem.enabled:
        return None
    return ModemPoller(_modem_opener(cfg, closing), cfg.modem.poll_interval, loop.post)


def power_cycler(cfg, pin_factory, loop):
    if cfg.modem.power_cycle is None:
        return None
    return _power_cycler(cfg.modem.power_cycle, pin_factory, loop)


def request_install(run_dir: Path) -> None:
    """Ask the root-only speaker-update.service (a path unit watches this file) to install and switch."""
    request = run_dir / "update.request"
    request.write_text("install\n")


def _modem_opener(cfg, closing):
    from node.modem.at import ATPort

    port = cfg.modem.port
    if port == "sim":
        if not cfg.node.simulate:
            raise ConfigError(['modem.port: "sim" needs simulation (node.simulate = true or --simulate)'])
        from node.modem.simulator import ModemSimulator

        simulator = ModemSimulator("ec25", link=Path(runtime_dir(cfg)) / "ttyModemAT")
        closing.callback(simulator.close)
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


class SimControl:
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
