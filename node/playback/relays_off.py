"""`speaker-node relays-off`: force every relay to its inactive level, with or without the daemon.

systemd runs this as ExecStopPost, so it must work after the daemon crashed, and it must not depend on
anything but the relay pin list: it exits 0 whenever every pin it knows about was set inactive.
"""

from __future__ import annotations

import argparse
import sys

from node.errors import ConfigError, DeviceError
from node.playback.relays import RelaySpec


def parse_pins(text: str) -> list[RelaySpec]:
    """'17,27:low' -> [RelaySpec(17, True), RelaySpec(27, False)] (":low" = active-low relay board)."""
    specs, problems = [], []
    for part in filter(None, (p.strip() for p in text.split(","))):
        pin, _, level = part.partition(":")
        if not pin.isdigit() or level not in ("", "high", "low"):
            problems.append(f"--pins: {part!r} is not PIN or PIN:low or PIN:high")
            continue
        specs.append(RelaySpec(int(pin), active_high=level != "low"))
    if problems:
        raise ConfigError(problems)
    if not specs:
        raise ConfigError(["--pins: no pins given"])
    return specs


def specs_from_config(path: str) -> list[RelaySpec]:
    """Relay pins from node.toml, zones first and the amplifier last (horns off before the amp)."""
    from node.config import load_config  # imported late: --pins must work even if config code breaks

    relays = load_config(path).relays
    specs = [RelaySpec(int(zone.pin), bool(zone.active_high)) for zone in relays.zones]
    if relays.amplifier is not None:
        specs.append(RelaySpec(int(relays.amplifier.pin), bool(relays.amplifier.active_high)))
    if not specs:
        raise ConfigError([f"{path}: [relays] names no amplifier and no zones"])
    return specs


def force_all_off(specs: list[RelaySpec], pin_factory=None) -> list[str]:
    """Drive every pin to its inactive level, in the order given.

    Returns one problem string per pin that could not be set (the others are still set)."""
    from gpiozero import OutputDevice

    problems = []
    for spec in specs:
        try:
            device = OutputDevice(spec.pin, active_high=spec.active_high, initial_value=False,
                                  pin_factory=pin_factory)
        except Exception as exc:  # a busy or missing pin must not stop the others
            problems.append(f"GPIO{spec.pin}: {exc}")
            continue
        try:
            device.off()
        finally:
            # close() leaves the pin an output at its last (inactive) level on lgpio/RPi.GPIO builds
            # that keep state; the hardware rule (pull to inactive) covers the rest.
            device.close()
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speaker-node relays-off",
                                     description="Force every relay off (amplifier and horn zones).")
    parser.add_argument("--config", default="/etc/speaker-node/node.toml", help="node.toml with [relays]")
    parser.add_argument("--pins", help="instead of --config: comma list PIN[:low|:high], e.g. 17,27:low")
    parser.add_argument("--simulate", action="store_true", help="use gpiozero's MockFactory (no hardware)")
    args = parser.parse_args(argv)
    try:
        if args.pins:
            specs = parse_pins(args.pins)
        else:
            specs = specs_from_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"speaker-node relays-off: {problem}", file=sys.stderr)
        return 78
    except (ImportError, OSError) as exc:
        print(f"speaker-node relays-off: cannot read relay config ({exc}); use --pins", file=sys.stderr)
        return 78
    pin_factory = None
    if args.simulate:
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()
    try:
        problems = force_all_off(specs, pin_factory)
    except DeviceError as exc:
        problems = [str(exc)]
    for problem in problems:
        print(f"speaker-node relays-off: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"relays off: {', '.join(f'GPIO{s.pin}' for s in specs)}")
    return 0
