"""Remote configuration: a signed, versioned `config` command may change a whitelisted subset of
node.toml, and nothing else (never key paths, trust files, node identity or the simulation switch).

Accepted settings are validated with the same schema as node.toml and apply at once where live
objects read them (volume, relay timing, heartbeat interval), the rest (broker list, keep-alive) at the
next start. What survives a restart is the accepted config envelopes themselves (exact signed bytes,
`ENVELOPES_KEY`), never the merged settings: at every start each kept envelope is verified again
against the trust in force and only the settings of those that still verify are laid over node.toml
(whoever can write the SD card while the node is off must not be able to change how it sounds).
"""

from __future__ import annotations

import base64
import binascii
import logging

from node.config import ConfigError, validate
from node.trust import reasons

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
STORE_KEY = "config_overlay"        # the merged settings in force: derived, rebuilt at every start
# [{"version", "keys", "id", "envelope" (base64)}], oldest first; only "envelope" is trusted (verified
# again), the rest only prunes and names a refused one when its envelope cannot say.
ENVELOPES_KEY = "config_envelopes"
MAX_KEPT = len(REMOTE_SETTINGS)


def overlay(raw: dict, settings: dict) -> dict:
    merged = {section: dict(values) for section, values in raw.items()}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        merged.setdefault(section, {})[name] = value
    return merged


def keep_envelope(store, version: int, keys, envelope: bytes, command_id: str | None = None) -> None:
    """Keep an applied config envelope for the next start. An envelope whose every key a newer one
    sets again no longer counts and is dropped, so at most one envelope per remote setting is kept."""
    kept = [e for e in _kept(store) if e.get("version") != version]
    kept.append({"version": version, "keys": sorted(keys), "id": command_id,
                 "envelope": base64.b64encode(envelope).decode()})
    kept.sort(key=lambda e: e["version"] if isinstance(e.get("version"), int) else -1)
    counting, later = [], set()
    for entry in reversed(kept):
        keys_of = set(entry.get("keys") or ())
        if not keys_of <= later:
            counting.append(entry)
        later |= keys_of
    store.put(ENVELOPES_KEY, list(reversed(counting)))


def _kept(store) -> list:
    kept = store.get(ENVELOPES_KEY)
    if kept is None:  # a state.db from before envelopes were kept: its last config document
        document = store.document("config")
        return [{"version": document[0], "keys": [], "envelope": base64.b64encode(document[1]).decode()}] \
            if document else []
    return kept if isinstance(kept, list) else []


def apply_stored(cfg, store, verify) -> tuple[object, list[dict]]:
    """The configuration in force: node.toml with the settings of the kept config envelopes that still
    verify laid over it, oldest version first. `verify(envelope_bytes)` is verify_stored against the
    trust in force (Accepted | Rejected). Returns (config, refusals): each refusal is the data of a
    `stored_envelope_refused` event (store "config"); a refused envelope's settings are not applied."""
    refused, verified = [], []
    kept = _kept(store)
    if len(kept) > MAX_KEPT:  # never more than one per remote setting: the rest was written by hand
        log.error("%d kept config envelopes, only the newest %d are looked at", len(kept), MAX_KEPT)
    for entry in kept[-MAX_KEPT:]:
        try:
            envelope = base64.b64decode(entry["envelope"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            refused.append(_refusal(reasons.MALFORMED, f"kept config entry unreadable: {exc}",
                                    command_id=_stored_id(entry)))
            continue
        result = verify(envelope)
        command = getattr(result, "command", None)
        if command is None:
            refused.append(_refusal(result.reason, result.detail, result.keyid,
                                    result.command_id or _stored_id(entry)))
            continue
        unknown = sorted(k for k in command.body.settings if k not in REMOTE_SETTINGS)
        if unknown:  # never accepted on arrival; refuse it whole, as then
            refused.append(_refusal(reasons.MALFORMED, f"may not be set remotely: {', '.join(unknown)}",
                                    command_id=command.id))
            continue
        verified.append(command)
    settings: dict = {}
    for command in sorted(verified, key=lambda c: c.version):
        settings.update(command.body.settings)
    for data in refused:
        log.error("stored config refused: %s %s", data["reason"], data["detail"])
    if store.get(STORE_KEY, {}) != settings:
        store.put(STORE_KEY, settings)  # the next config merges over what is really in force
    if not settings:
        return cfg, refused
    try:
        return validate(overlay(cfg.raw, settings), cfg.source), refused
    except ConfigError as exc:  # settings validated on arrival no longer fit node.toml: keep the file's config
        log.error("stored remote settings ignored: %s", exc)
        return cfg, refused


def _stored_id(entry) -> str | None:
    value = entry.get("id") if isinstance(entry, dict) else None
    return value[:128] if isinstance(value, str) else None


def _refusal(reason, detail, keyid=None, command_id=None) -> dict:
    return {"store": "config", "reason": reason, "keyid": keyid, "command_id": command_id,
            "detail": (detail or "")[:200] or None}


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
