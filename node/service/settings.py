"""Remote configuration: a signed, versioned `config` command may change a whitelisted subset of
node.toml, and nothing else (never key paths, trust files, node identity or the simulation switch).

Accepted settings are validated with the same schema as node.toml, persisted in the state database
and laid over the file at every start; settings that live objects read (volume, relay timing,
heartbeat interval) also apply at once, the rest (broker list, keep-alive) at the next start.
"""

from __future__ import annotations

import logging

from node.config import ConfigError, validate

log = logging.getLogger(__name__)

REMOTE_SETTINGS = {
    # applied at once
    "audio.default_volume", "relays.warmup", "relays.tail", "relays.idle_hold", "relays.min_off",
    "health.heartbeat_full", "health.delta_min_interval",
    # applied at the next start
    "broker.servers", "broker.keepalive", "modem.poll_interval", "modem.no_link_after", "audio.max_queue",
}
LIVE = {"audio.default_volume", "relays.warmup", "relays.tail", "relays.idle_hold", "relays.min_off",
        "health.heartbeat_full", "health.delta_min_interval"}
STORE_KEY = "config_overlay"


def overlay(raw: dict, settings: dict) -> dict:
    merged = {section: dict(values) for section, values in raw.items()}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        merged.setdefault(section, {})[name] = value
    return merged


def apply_stored(cfg, store):
    """The configuration in force: node.toml with the last accepted remote settings laid over it."""
    settings = store.get(STORE_KEY, {})
    if not settings:
        return cfg
    try:
        return validate(overlay(cfg.raw, settings), cfg.source)
    except ConfigError as exc:  # cannot happen for settings validated on arrival; keep the file's config
        log.error("stored remote settings ignored: %s", exc)
        return cfg


def accept(cfg, store, settings: dict) -> tuple[dict, list[str]]:
    """Validate `settings` against the whitelist and the schema; persist them. Returns (applied values,
    problems). Nothing is applied when anything is wrong: a config is taken whole or not at all."""
    problems = [f"{key}: may not be set remotely" for key in settings if key not in REMOTE_SETTINGS]
    current = store.get(STORE_KEY, {})
    merged_settings = {**current, **settings}
    if not problems:
        try:
            validated = validate(overlay(cfg.raw, merged_settings), cfg.source)
        except ConfigError as exc:
            problems = exc.problems
    if problems:
        return {}, problems
    store.put(STORE_KEY, merged_settings)
    applied = {}
    for key in settings:
        section, name = key.split(".", 1)
        applied[key] = getattr(getattr(validated, section), name)
    return applied, []


def apply_live(cfg, onair, health, applied: dict) -> list[str]:
    """Set what running objects read; returns the keys that wait for a restart."""
    later = []
    for key, value in applied.items():
        section, name = key.split(".", 1)
        cfg.apply_validated(key, value)
        if key not in LIVE:
            later.append(key)
        elif section == "relays":
            setattr(onair.sequencer, name, value)
        elif key == "health.heartbeat_full":
            health.heartbeat.full_every_s = value
        elif key == "health.delta_min_interval":
            health.heartbeat.min_delta_interval_s = value
    return later
