"""`speaker-node modem status|simulate`: read the 4G modem at the pole, or run a simulated one."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from node.modem.at import ATPort, ModemError, ModemGone, ModemTimeout

LABELS = {
    "model": "Modem model",
    "sim": "SIM",
    "registration": "Registration",
    "operator": "Operator",
    "mcc_mnc": "MCC-MNC",
    "access_technology": "Access technology",
    "rssi_dbm": "RSSI (dBm)",
    "rsrp_dbm": "RSRP (dBm)",
    "rsrq_db": "RSRQ (dB)",
    "sinr_db": "SINR (dB)",
    "imei": "IMEI",
    "iccid": "ICCID",
    "network_time": "Network time",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speaker-node modem", description="Talk to the 4G modem's AT port.")
    sub = parser.add_subparsers(dest="action", required=True)
    status = sub.add_parser("status", help="read SIM, registration, operator, signal, IMEI, ICCID, time")
    status.add_argument("--port", default="/dev/ttyModemAT", help="AT port (default: %(default)s)")
    status.add_argument("--baud", type=int, default=115200)
    status.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each answer")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    simulate = sub.add_parser("simulate", help="run a simulated modem on a pty until Ctrl-C")
    simulate.add_argument("--profile", default="ec25", choices=["ec25", "sim7600"])
    simulate.add_argument("--link", help="stable path for the simulated port (default: a temporary one)")
    simulate.add_argument("--no-echo", action="store_true", help="start with command echo off")
    return parser


def _no_modem(port: str, exc: Exception) -> int:
    print(
        f"speaker-node modem: no modem answered on {port} ({exc}).\n"
        "  Check the modem's USB cable and power, that the port name is right (ls -l /dev/ttyModemAT "
        "/dev/ttyUSB*),\n  and that ModemManager is not holding the AT port (see docs/modem.md).",
        file=sys.stderr,
    )
    return 1


def _status(args) -> int:
    from node.modem.status import read_status

    if not os.path.exists(args.port):
        return _no_modem(args.port, FileNotFoundError("no such device"))
    port = ATPort(args.port, args.baud, timeout=args.timeout, open_attempts=2, retry_delay=0.5)
    try:
        port.open()
        status = read_status(port)
    except (ModemGone, ModemTimeout) as exc:
        return _no_modem(args.port, exc)
    except ModemError as exc:
        print(f"speaker-node modem: the modem on {args.port} misbehaved: {exc}", file=sys.stderr)
        return 1
    finally:
        port.close()
    data = status.to_json()
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    width = max(len(label) for label in LABELS.values())
    for key, label in LABELS.items():
        value = data[key]
        print(f"{label:<{width}}  {'-' if value is None else value}")
    errors = status.details.get("errors") or {}
    if errors:
        print(f"\n{len(errors)} queries failed: " + ", ".join(f"{k} ({v})" for k, v in errors.items()))
    return 0


def _simulate(args) -> int:
    from node.loop import SignalStop
    from node.modem.simulator import ModemSimulator

    stop = SignalStop()
    previous = signal.signal(signal.SIGTERM, stop.set)
    try:
        with ModemSimulator(args.profile, echo=not args.no_echo, link=args.link) as sim:
            print(
                f"simulated {sim.profile.model} on {sim.port} (pty {sim.slave_path}); Ctrl-C to stop",
                flush=True,
            )
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            print(f"stopped after {len(sim.commands)} commands, {sim.resets} resets", flush=True)
    except OSError as exc:
        print(f"speaker-node modem simulate: cannot create the port: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "status":
        return _status(args)
    return _simulate(args)
