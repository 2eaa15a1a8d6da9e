"""Build the node from its configuration: pick a real or simulated adapter for each outside thing."""

from __future__ import annotations

import logging
from pathlib import Path

from node.adapters.backoff import Backoff
from node.adapters.broker import MqttBroker, tls_context
from node.adapters.clock import SystemClock
from node.adapters.store import StateStore
from node.adapters.systemd_notify import Notifier
from node.app import NodeApp
from node.errors import ConfigError
from node.loop import EventLoop

log = logging.getLogger(__name__)


def _check_files(cfg) -> None:
    problems = []
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(cfg.broker, key)
        if not Path(path).is_file():
            problems.append(f"broker.{key}: {path} does not exist")
    if problems:
        raise ConfigError(problems)


def build_app(cfg, *, clock=None, notifier=None, make_broker=None) -> NodeApp:
    state_dir = Path(cfg.storage.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    clock = clock or SystemClock(cfg.clock.ntp_sync_file)
    loop = EventLoop(clock.monotonic)
    store = StateStore(state_dir / "state.db")
    if make_broker is None:
        _check_files(cfg)
        try:
            tls = tls_context(cfg.broker.ca_file, cfg.broker.cert_file, cfg.broker.key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError([f"broker TLS files: {exc}"]) from None

        def make_broker(**kw):
            return MqttBroker(
                client_id=cfg.node.id, servers=cfg.broker.servers, tls=tls, keepalive=cfg.broker.keepalive,
                session_expiry=cfg.broker.session_expiry,
                backoff=Backoff(cfg.broker.reconnect_min, cfg.broker.reconnect_max), **kw)

    parts = None
    app = NodeApp(cfg, loop=loop, store=store, notifier=notifier or Notifier(), clock=clock,
                  make_broker=make_broker, parts=parts)

    def close():
        store.close()

    app.close = close
    return app
