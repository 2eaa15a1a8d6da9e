"""`speaker-node run --config FILE [--simulate]`: the node daemon.

The start sequence reads top to bottom (node.app.NodeApp builds the parts in order); one ExitStack
stops what started and closes what was built, in reverse, however the run ends.
Exit codes systemd understands: 0 clean stop (SIGTERM), 78 EX_CONFIG only for a configuration a person
must fix (the unit does not restart it: RestartPreventExitStatus=78), 69 EX_UNAVAILABLE when the GPIO
pins cannot be opened (missing chip, pins busy: restarted, after GPIO_RETRY_DELAY so a freed pin is
picked up within a minute), 75 EX_TEMPFAIL for any other OS error at start (restarted, forever), 1
anything else (restarted too). Storage faults are none of these: the stores open degraded and the node
plays what it can prove (docs/storage.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time

from node.config import DEFAULT_PATH, load_config, load_config_simulated, report
from node.errors import EX_CONFIG, EX_TEMPFAIL, EX_UNAVAILABLE, ConfigError, HardwareUnavailable

log = logging.getLogger("speaker-node")
# 20 starts per 10 min is the unit's limit: one attempt per ~35 s stays below it forever.
DEFAULT_GPIO_RETRY_DELAY = 30.0
GPIO_RETRY_DELAY = float(os.environ.get("SPEAKER_GPIO_RETRY_DELAY", DEFAULT_GPIO_RETRY_DELAY))
PRIVATE_UMASK = 0o077


def parse_args(argv):
    p = argparse.ArgumentParser(prog="speaker-node run", description="Run the speaker-node daemon.")
    p.add_argument("--config", default=DEFAULT_PATH, help=f"node configuration (default {DEFAULT_PATH})")
    p.add_argument("--simulate", action="store_true",
                   help="simulated hardware: MockFactory pins, WAV output, pty modem (same daemon code)")
    p.add_argument("--log-level", default=os.environ.get("SPEAKER_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def setup_logging(level: str) -> None:
    # journald adds timestamps; keep lines short and greppable. Messages carry remote text (keyids,
    # topics, details): the formatter escapes control characters so no message can forge a line.
    from node.logsafe import EscapingFormatter

    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def main(argv: list[str]) -> int:
    # Our own umask, whatever started us (systemd's UMask= too, but also a shell or a test): state,
    # cache and status files hold accepted commands and the node's identity, for no other user.
    os.umask(PRIVATE_UMASK)
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(report(exc, args.config), file=sys.stderr)
        return EX_CONFIG
    if args.simulate and not cfg.node.simulate:
        cfg = load_config_simulated(args.config)

    from node.app import NodeApp  # imported after the config check: a bad config exits fast

    with contextlib.ExitStack() as running:
        try:
            app = NodeApp(cfg)  # a part failing here closes the ones already built (relays end off)
        except ConfigError as exc:
            print(report(exc, args.config), file=sys.stderr)
            return EX_CONFIG
        except HardwareUnavailable as exc:
            from node.adapters.systemd_notify import Notifier

            print(f"speaker-node: GPIO unavailable, retrying in {GPIO_RETRY_DELAY:.0f} s: {exc}", file=sys.stderr)
            Notifier().notify(f"STATUS=GPIO unavailable: {exc}")
            time.sleep(GPIO_RETRY_DELAY)
            return EX_UNAVAILABLE
        except OSError as exc:  # e.g. the runtime tmpfs; never a configuration error: try again
            print(f"speaker-node: cannot start yet: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        running.callback(app.close)

        signals: list[int] = []

        def on_signal(signum, frame):
            # Only a reentrant post here (the loop's queue is a SimpleQueue): logging from a handler can
            # re-enter the log stream's buffered writer the interrupted main thread was in.
            signals.append(signum)
            app.loop.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        running.callback(app.shutdown)  # runs before close: playback and relays off, final acks, offline
        app.start()
        app.loop.run()
        if signals:
            log.info("signal %d: stopping", signals[0])
    # After a software update switch: exit 75 for systemd, or exec the guard (simulation); never returns
    # when it execs.
    code = app.restarter.after_shutdown()
    return code if code is not None else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
