"""Relays (amplifier mains + horn zones) and digital inputs, through gpiozero.

The pin factory is injected (gpiozero's MockFactory in tests, the default factory on a Pi), never set
globally. Hardware rule (docs/playback.md): a relay must be OFF when its GPIO floats; `active_high` in
the config says which level energises the relay and is always explicit.

Threading: relay methods are called from the node loop thread. Input edges arrive on gpiozero's
thread; Inputs only debounces and posts InputChanged through `post_event`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from gpiozero import DigitalInputDevice, OutputDevice

from node.errors import DeviceError, HardwareUnavailable

AMPLIFIER = "amplifier"
WIRE_AMPLIFIER = "amp"  # its name in everything the node sends (status relays, play record relays)


def wire_relay_name(name: str) -> str:
    """One name per relay on the wire: "amp" for the amplifier, the zone's own name otherwise."""
    return WIRE_AMPLIFIER if name == AMPLIFIER else name


@dataclass(frozen=True)
class RelaySpec:
    pin: int
    active_high: bool = True


@dataclass(frozen=True)
class InputSpec:
    """active_high=False (default, config `{pin, active_high = false}`): the internal pull-up holds the
    pin high and a closed contact pulling it low is "active". active_high=True: the pull-down holds it
    low and a high level is "active". Either way a broken wire reads "inactive"."""

    pin: int
    active_high: bool = False


@dataclass(frozen=True)
class InputChanged:
    name: str
    active: bool
    at: float  # monotonic time of the edge that started the stable period


class RelayBoard:
    """The amplifier relay and one relay per horn zone. Every relay starts OFF."""

    def __init__(self, amplifier: RelaySpec, zones: dict[str, RelaySpec], *, pin_factory=None,
                 clock: Callable[[], float] = time.monotonic):
        if AMPLIFIER in zones:
            raise DeviceError(f"a zone may not be called {AMPLIFIER!r}")
        pins = [amplifier.pin, *(spec.pin for spec in zones.values())]
        if len(set(pins)) != len(pins):
            raise DeviceError(f"relay pins must be distinct, got {pins}")
        self._clock = clock
        self._devices: dict[str, OutputDevice] = {}
        self.history: list[tuple[float, str, bool]] = []
        try:
            for name, spec in {AMPLIFIER: amplifier, **zones}.items():
                self._devices[name] = OutputDevice(spec.pin, active_high=spec.active_high,
                                                   initial_value=False, pin_factory=pin_factory)
        except Exception as exc:  # gpiozero raises many types (pin in use, no such pin, no factory)
            self.close()
            raise HardwareUnavailable(f"cannot open relay pins: {exc}") from exc
        self._zones = list(zones)

    @property
    def zone_names(self) -> list[str]:
        return list(self._zones)

    def amp_on(self) -> None:
        self._set(AMPLIFIER, True)

    def amp_off(self) -> None:
        self._set(AMPLIFIER, False)

    def zones_on(self, names: list[str] | None = None) -> None:
        """Switch the named zones on (None = every zone). Unknown names raise DeviceError before any
        relay moves."""
        targets = self._zones if names is None else list(names)
        unknown = [n for n in targets if n not in self._zones]
        if unknown:
            raise DeviceError(f"unknown zones {unknown}; configured: {self._zones}")
        for name in targets:
            self._set(name, True)

    def zones_off(self) -> None:
        for name in self._zones:
            self._set(name, False)

    def all_off(self) -> None:
        """Zones first, then the amplifier: the horns are disconnected before the amp loses power,
        which avoids the switch-off thump."""
        self.zones_off()
        self.amp_off()

    def states(self) -> dict[str, bool]:
        return {name: bool(device.value) for name, device in self._devices.items()}

    def close(self) -> None:
        for device in self._devices.values():
            try:
                device.off()
            finally:
                device.close()
        self._devices = {}

    def _set(self, name: str, on: bool) -> None:
        device = self._devices[name]
        if bool(device.value) == on:
            return
        device.on() if on else device.off()
        self.history.append((self._clock(), name, on))


class Debouncer:
    """Pure debounce: a level counts once it has held for `hold` seconds.

    `edge(now, level)` records a raw change; `settle(now)` returns the new stable level (and the time of
    the edge that started it) once it has held long enough, else None.
    """

    def __init__(self, level: bool, hold: float):
        self.stable = level
        self.hold = hold
        self._raw = level
        self._since = 0.0

    def edge(self, now: float, level: bool) -> None:
        if level != self._raw:
            self._raw, self._since = level, now

    def settle(self, now: float) -> tuple[bool, float] | None:
        if self._raw != self.stable and now - self._since >= self.hold:
            self.stable = self._raw
            return self.stable, self._since
        return None

    def deadline(self) -> float | None:
        return self._since + self.hold if self._raw != self.stable else None


class Inputs:
    """Debounced digital inputs; posts InputChanged(name, active, at) once per stable change.

    Debouncing is done here (not by gpiozero's bounce_time) so it behaves the same on every pin
    factory: gpiozero's MockFactory ignores bounce_time. A timer thread re-checks a pin `debounce`
    seconds after its last edge.
    """

    def __init__(self, specs: dict[str, InputSpec], *, post_event: Callable[[InputChanged], None],
                 pin_factory=None, debounce: float = 0.05, clock: Callable[[], float] = time.monotonic):
        self._post = post_event
        self._clock = clock
        self._debounce = debounce
        self._lock = threading.Lock()
        self._devices: dict[str, DigitalInputDevice] = {}
        self._debouncers: dict[str, Debouncer] = {}
        self._timers: dict[str, threading.Timer] = {}
        try:
            for name, spec in specs.items():
                device = DigitalInputDevice(spec.pin, pull_up=not spec.active_high, pin_factory=pin_factory)
                self._devices[name] = device
                self._debouncers[name] = Debouncer(bool(device.value), debounce)
                device.when_activated = lambda _d, n=name: self._on_edge(n)
                device.when_deactivated = lambda _d, n=name: self._on_edge(n)
        except Exception as exc:
            self.close()
            raise HardwareUnavailable(f"cannot open input pins: {exc}") from exc

    def read(self) -> dict[str, bool]:
        """The debounced level of every input (True = active)."""
        with self._lock:
            return {name: d.stable for name, d in self._debouncers.items()}

    def close(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()
        for device in self._devices.values():
            device.close()
        self._devices = {}

    def _on_edge(self, name: str) -> None:
        device = self._devices.get(name)
        if device is None:
            return
        now = self._clock()
        with self._lock:
            self._debouncers[name].edge(now, bool(device.value))
            old = self._timers.pop(name, None)
            if old is not None:
                old.cancel()
            self._arm(name, self._debounce)

    def _arm(self, name: str, delay: float) -> None:
        timer = threading.Timer(delay, self._settle, args=(name,))
        timer.daemon = True
        self._timers[name] = timer
        timer.start()

    def _settle(self, name: str) -> None:
        with self._lock:
            if name not in self._debouncers or name not in self._devices:
                return
            self._timers.pop(name, None)
            debouncer = self._debouncers[name]
            now = self._clock()
            change = debouncer.settle(now)
            deadline = debouncer.deadline()
            if change is None and deadline is not None:
                self._arm(name, max(deadline - now, 0.001))  # woke early or clock jitter: look again
        if change is not None:
            self._post(InputChanged(name, change[0], change[1]))
