"""`speaker-district serve DIR`: the long-running district service.

It runs a list of *duties*, each an object with `name`, `start()` and `stop()`. They start in order and
stop in reverse (one contextlib.ExitStack), so a duty may rely on every duty before it, and a duty that
fails to start stops the ones already running. The time service is the first duty: nodes need signed
time before they can accept anything else. Later duties (record collection, ...) are appended to
`DUTIES` with a factory `make(workspace_dir, args) -> duty`.

Under systemd (systemd/speaker-district.service) it reports READY=1 once every duty is up and stops
cleanly on SIGTERM.

It runs from an online-only directory (`speaker-district serve-dir WORKSPACE OUT`): before any duty
starts it reads every file of DIR for private keys and exits EX_CONFIG (78; the unit does not restart
it) when it finds a root key, a signing key with a role other than time/ack, the TLS CA key or another
TLS key than its own. `--allow-offline-keys` runs anyway with one warning per key (the demo's
single-machine district, development).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger("speaker-district.serve")
EX_CONFIG = 78  # sysexits.h: configuration error; RestartPreventExitStatus=78 in the shipped unit


class Duty(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class DutySpec:
    name: str
    make: Callable[[Path, argparse.Namespace], Duty]
    help: str


def _time_duty(directory: Path, args: argparse.Namespace) -> Duty:
    from provisioning.district.serve_dir import tls_identity
    from provisioning.district.timeservice import TimeService

    return TimeService(directory, args.broker, radius_ms=args.time_radius_ms, identity=tls_identity(directory))


def _collector_duty(directory: Path, args: argparse.Namespace) -> Duty:
    from provisioning.district.collector import CollectorDuty
    from provisioning.district.serve_dir import tls_identity

    # --broker names one broker; without it the collector reads every broker in district.toml's `brokers`
    return CollectorDuty(directory, db=args.db, brokers=[args.broker] if args.broker else None,
                         identity=tls_identity(directory))


DUTIES: list[DutySpec] = [
    DutySpec("time", _time_duty, "answer node time requests with signed time (docs/protocol.md §7a)"),
    DutySpec("collector", _collector_duty,
             "store events, play records and status from every broker; signed acknowledgements (§9b)"),
]


class DistrictServer:
    """Start duties in order, stop them in reverse; usable as a context manager."""

    def __init__(self, duties: list[Duty]):
        self.duties = list(duties)
        self._stack: contextlib.ExitStack | None = None
        self.running: list[str] = []

    def start(self) -> "DistrictServer":
        with contextlib.ExitStack() as stack:
            for duty in self.duties:
                duty.start()
                self.running.append(duty.name)
                stack.callback(self._stop_one, duty)
                log.info("duty %s started", duty.name)
            self._stack = stack.pop_all()
        return self

    def _stop_one(self, duty: Duty) -> None:
        try:
            duty.stop()
        finally:
            self.running.remove(duty.name)
            log.info("duty %s stopped", duty.name)

    def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def __enter__(self) -> "DistrictServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def build_duties(directory: Path, args: argparse.Namespace) -> list[Duty]:
    wanted = set(args.only or [spec.name for spec in DUTIES])
    return [spec.make(directory, args) for spec in DUTIES if spec.name in wanted]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speaker-district serve", description=__doc__.splitlines()[0])
    p.add_argument("directory", help="the online-only directory written by 'speaker-district serve-dir'")
    p.add_argument("--broker", help="HOST:PORT of the district broker (default: district.toml's broker)")
    p.add_argument("--only", action="append", choices=[spec.name for spec in DUTIES],
                   help="run only this duty (repeatable; default: all)")
    p.add_argument("--time-radius-ms", type=int, default=1000,
                   help="uncertainty of this server's clock, sent with every time answer (default 1000)")
    p.add_argument("--db", help="the collector's database: postgresql://... or a SQLite file (default DIR/records.db)")
    p.add_argument("--allow-offline-keys", action="store_true",
                   help="run although DIR holds offline private keys (a full workspace): development only")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def refuse_offline_keys(directory: Path, allow: bool) -> bool:
    """True when serve may run from DIRECTORY; prints what it found either way."""
    from provisioning.district.serve_dir import offline_keys

    found = offline_keys(directory)
    for item in found:
        print(f"speaker-district serve: {'WARNING: ' if allow else ''}offline private key in {item.path}: "
              f"{item.why}", file=sys.stderr)
    if found and not allow:
        print(f"speaker-district serve: refusing to run with {len(found)} offline key(s) on an always-online "
              f"server; write an online-only directory with 'speaker-district serve-dir WORKSPACE OUT' and "
              f"run 'speaker-district serve OUT' (or pass --allow-offline-keys on a development machine)",
              file=sys.stderr)
        return False
    if found:
        log.warning("running with %d offline private key(s) in %s (--allow-offline-keys): anyone who gets "
                    "into this machine can sign as the district", len(found), directory)
    return True


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from node.adapters.systemd_notify import Notifier
    from node.loop import SignalStop
    from provisioning.district.workspace import WorkspaceError

    stop = SignalStop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop.set)
    notifier = Notifier()
    try:
        if not refuse_offline_keys(Path(args.directory), args.allow_offline_keys):
            return EX_CONFIG
        duties = build_duties(Path(args.directory), args)
        with DistrictServer(duties) as server:
            notifier.notify("READY=1", f"STATUS=duties: {', '.join(server.running)}")
            print(f"speaker-district serve: running {', '.join(server.running)}", flush=True)
            while not stop.wait(3600):
                pass
            notifier.notify("STOPPING=1")
    except (WorkspaceError, ConnectionError, RuntimeError, OSError) as exc:
        print(f"speaker-district serve: {exc}", file=sys.stderr)
        return 1
    return 0
