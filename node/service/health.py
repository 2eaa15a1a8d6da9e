"""Health: readings -> heartbeat (full snapshot / delta), cabinet inputs -> events, modem supervision.

The modem dialogue blocks for seconds, so a small poller thread does it and posts ModemReading; the
recovery ladder (pure) runs on the loop thread and its actions go back to the poller.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node import __version__
from node.filemodes import write_private
from node.modem.supervision import RecoveryLadder, network_time_bound
from node.playback.relays import InputChanged, wire_relay_name
from node.reporting import system
from node.reporting.heartbeat import Heartbeat, alarms_from

log = logging.getLogger(__name__)

# heartbeat "net" member <- ModemStatus JSON key (docs/heartbeat.md)
NET_FIELDS = {"op": "operator", "mccmnc": "mcc_mnc", "act": "access_technology", "rssi": "rssi_dbm",
              "rsrp": "rsrp_dbm", "sinr": "sinr_db", "reg": "registration", "sim": "sim"}


@dataclass(frozen=True)
class ModemReading:
    status: dict | None     # ModemStatus.to_json(), or None when the modem did not answer
    error: str | None = None


@dataclass(frozen=True)
class LadderDone:
    step: str
    ok: bool
    detail: str = ""


class ModemPoller:
    """Owns the serial port on its own thread: polls status, performs ladder steps on request."""

    def __init__(self, open_port: Callable[[], object], interval: float, post: Callable[[object], None]):
        self.open_port, self.interval, self.post = open_port, interval, post
        self._requests: "queue.Queue[str | None]" = queue.Queue()
        self._stop = threading.Event()
        self._port = None
        self._thread = threading.Thread(target=self._run, name="modem", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self, step: str) -> None:
        self._requests.put(step)

    def _poll(self) -> None:
        from node.modem.status import read_status

        try:
            if self._port is None:
                self._port = self.open_port()
            self.post(ModemReading(read_status(self._port).to_json()))
        except Exception as exc:  # noqa: BLE001 - a vanished USB modem is routine, not a crash
            self._close_port()
            self.post(ModemReading(None, f"{type(exc).__name__}: {exc}"[:200]))

    def _step(self, step: str) -> None:
        try:
            if step == "cfun_reset":
                if self._port is None:
                    self._port = self.open_port()
                self._port.command("AT+CFUN=1,1", timeout=15)
                self._close_port()  # the modem re-enumerates on USB
            self.post(LadderDone(step, True))
        except Exception as exc:  # noqa: BLE001
            self._close_port()
            self.post(LadderDone(step, False, str(exc)[:200]))

    def _close_port(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except Exception:  # noqa: BLE001
                pass
            self._port = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            try:
                step = self._requests.get(timeout=self.interval)
            except queue.Empty:
                continue
            if step is None:
                break
            if step != "requery":
                self._step(step)

    def close(self) -> None:
        self._stop.set()
        self._requests.put(None)
        self._thread.join(5)
        self._close_port()


class HealthService:
    def __init__(self, *, cfg, birth: int, clock, publish_full, publish_delta, emit_event, collect: Callable[[], dict],
                 runtime_dir: Path, power_cycle: Callable[[], None] | None = None,
                 reboot: Callable[[], None] | None = None, poller: ModemPoller | None = None):
        self.cfg, self.clock = cfg, clock
        self.heartbeat = Heartbeat(cfg.node.id, birth, full_every_s=cfg.health.heartbeat_full,
                                   min_delta_interval_s=cfg.health.delta_min_interval)
        self.publish_full, self.publish_delta, self.emit_event = publish_full, publish_delta, emit_event
        self.collect = collect
        self.runtime_dir = runtime_dir
        self.net: dict = {}
        self.modem_status: dict | None = None
        self.inputs: dict[str, bool] = {}
        self.active_alarms: set[str] = set()
        self.ladder = RecoveryLadder(cfg.modem.no_link_after, has_power_cycle=cfg.modem.power_cycle is not None)
        self.poller = poller
        self.power_cycle, self.reboot = power_cycle, reboot
        self.broker_connected = False
        self._cert_cache: tuple[int | None, float] | None = None

    # --- readings ----------------------------------------------------------------------------------
    def readings(self) -> dict:
        data = system.read_system(data_path=self.cfg.storage.state_dir, cert_path=None)
        data["cert_d"] = self._cert_days()
        data.update(self.collect())
        data["ver"] = __version__
        data["net"] = dict(self.net)
        data["inputs"] = dict(self.inputs)
        return data

    def _cert_days(self) -> int | None:
        """Days to certificate expiry, parsed once an hour (not on every heartbeat tick)."""
        now = self.clock.monotonic()
        if self._cert_cache is None or now - self._cert_cache[1] >= 3600:
            self._cert_cache = (system.cert_days_left(self.cfg.broker.cert_file), now)
        return self._cert_cache[0]

    def snapshot(self) -> dict:
        return self.heartbeat.on_connect(self.clock.wall().timestamp(), self.readings())

    def tick(self) -> None:
        """Called every few seconds and at once after anything urgent changed."""
        readings = self.readings()
        for kind, payload in self.heartbeat.tick(self.clock.wall().timestamp(), readings):
            (self.publish_full if kind == "full" else self.publish_delta)(payload)
            self._write_runtime_status(payload if kind == "full" else None)
        if not self.runtime_dir.joinpath("status.json").exists():
            self._write_runtime_status(None)
        self._alarm_events(readings)

    def _alarm_events(self, readings: dict) -> None:
        alarms = set(alarms_from(readings))
        for code in sorted(alarms - self.active_alarms):
            self.emit_event("alarm_raised", {"alarm": code})
        for code in sorted(self.active_alarms - alarms):
            self.emit_event("alarm_cleared", {"alarm": code})
        self.active_alarms = alarms

    def _write_runtime_status(self, full: dict | None) -> None:
        """The latest status in the runtime directory (tmpfs on a node: no SD wear) for selftest."""
        status = self.heartbeat.last_sent if full is None else full
        try:
            write_private(self.runtime_dir / "status.json", json.dumps(status, separators=(",", ":")).encode())
        except OSError as exc:
            log.debug("runtime status not written: %s", exc)

    # --- inputs ------------------------------------------------------------------------------------
    def on_input(self, ev: InputChanged) -> None:
        if self.inputs.get(ev.name) == ev.active:
            return
        self.inputs[ev.name] = ev.active
        self.emit_event("input_changed", {"input": ev.name, "active": ev.active})

    # --- modem -------------------------------------------------------------------------------------
    def on_broker(self, connected: bool) -> None:
        """The broker link changed: tell the ladder now, not at the next modem poll (a minute later),
        so a connection made right after start-up is not reported as a restored outage."""
        self.broker_connected = connected
        registered = (self.modem_status or {}).get("registration") in ("home", "roaming")
        self.ladder.observe(self.clock.monotonic(), registered, connected)
        for event in self.ladder.take_events():
            self.emit_event(event.pop("type", "link_restored"), event)

    def on_modem(self, ev: ModemReading) -> tuple[str | None, object]:
        """Returns (ladder action or None, cellular network time or None)."""
        self.modem_status = ev.status
        if ev.status is None:
            self.net = {"sim": None, "reg": None}
            registered = False
        else:
            self.net = {short: ev.status.get(key) for short, key in NET_FIELDS.items()}
            registered = ev.status.get("registration") in ("home", "roaming")
        action = self.ladder.observe(self.clock.monotonic(), registered, self.broker_connected)
        for event in self.ladder.take_events():
            self.emit_event(event.pop("type", "link_restored"), event)
        if action:
            self.perform_ladder(action)
        cellular = network_time_bound(ev.status) if ev.status else None
        if cellular is not None:
            # The modem reports whole seconds: on average its clock is half a second ahead of the
            # truncated value it printed.
            cellular += dt.timedelta(seconds=0.5)
        return action, cellular

    def perform_ladder(self, action: str) -> None:
        log.warning("link down: recovery step %s", action)
        self.emit_event("recovery_step", {"step": action})
        if action in ("requery", "cfun_reset") and self.poller:
            self.poller.request(action)
        elif action == "power_cycle" and self.power_cycle:
            self.power_cycle()
        elif action == "reboot" and self.reboot:
            self.reboot()


def relay_states(relays) -> dict:
    if relays is None:
        return {}
    return {wire_relay_name(name): on for name, on in relays.states().items()}


def request_reboot(runtime_dir: Path) -> None:
    """The node runs unprivileged: it asks for a reboot by creating a file that speaker-reboot.path
    (a root-owned systemd path unit) watches."""
    Path(runtime_dir, "reboot-request").write_text("modem recovery ladder\n")
