"""Heartbeat: a full retained snapshot now and then, small deltas in between (pure: no IO, no clock).

Mobile data is paid per byte, so field names are short and a delta carries only what changed. Noisy
numbers (temperature, signal, load...) only count as changed when they move past a deadband; alarms,
inputs, playback and relays are what an operations room watches, so their changes go out at once.
docs/heartbeat.md describes every field; node/schemas/*.json are the contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from node import __version__

PROTOCOL_VERSION = 1

# Fields that identify a message rather than describe the node; never diffed.
ENVELOPE_KEYS = ("v", "node", "online", "birth", "seq", "ts")
# Grows every second and is derivable from ts; only full snapshots carry it.
NOT_IN_DELTAS = ("up",)
# Changes an operator must see now: sent immediately, even inside min_delta_interval_s.
URGENT_KEYS = frozenset({"alarms", "inputs", "play", "relays"})

# Per-field deadbands: a new value counts as changed only when it differs from the last value *sent*
# by at least this much (so slow drift still gets reported once it adds up).
DEADBANDS: dict[str, float] = {
    "temp": 2.0,
    "load": 0.5,
    "mem": 5,
    "disk": 50,
    "outbox": 50,
    "net.rssi": 6,
    "net.rsrp": 6,
    "net.sinr": 3,
}


@dataclass(frozen=True)
class Thresholds:
    """Alarm limits (documented in docs/heartbeat.md, section "Alarms")."""

    overheat_c: float = 80.0  # the Pi firmware starts soft throttling near 80-85 °C
    disk_low_mb: int = 200  # below this a bulletin download or the outbox may fail
    weak_rssi_dbm: int = -105  # weaker than this: LTE attach/calls marginal
    weak_rsrp_dbm: int = -115
    cert_expiring_days: int = 30  # leaves a month to re-issue in the field
    trust_expiring_days: int = 14  # trust documents are re-signed more often than certificates


DEFAULT_THRESHOLDS = Thresholds()

# SIM states that mean "no usable SIM" (node.modem.parse reports ready, absent, pin_required,
# puk_required, error).
SIM_BAD = frozenset({"absent", "pin_required", "puk_required", "error"})


def alarms_from(readings: dict, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """Sorted active alarm codes. Missing readings never raise an alarm (unknown is not bad)."""
    alarms: set[str] = set()
    inputs = readings.get("inputs") or {}
    if inputs.get("door") is True:
        alarms.add("door_open")
    if inputs.get("mains") is False:
        alarms.add("mains_lost")
    if inputs.get("amp_fault") is True:
        alarms.add("amp_fault")
    if "undervoltage" in (readings.get("thr") or []):
        alarms.add("undervoltage")
    temp = readings.get("temp")
    if temp is not None and temp >= thresholds.overheat_c:
        alarms.add("overheat")
    disk = readings.get("disk")
    if disk is not None and disk < thresholds.disk_low_mb:
        alarms.add("disk_low")
    net = readings.get("net") or {}
    rssi, rsrp = net.get("rssi"), net.get("rsrp")
    if (rssi is not None and rssi < thresholds.weak_rssi_dbm) or (
        rsrp is not None and rsrp < thresholds.weak_rsrp_dbm
    ):
        alarms.add("weak_signal")
    if net.get("sim") in SIM_BAD:
        alarms.add("no_sim")
    clk = readings.get("clk") or {}
    if clk.get("ok") is False:
        alarms.add("clock_untrusted")
    if clk.get("conflict") is True:
        alarms.add("clock_conflict")
    cert_d = readings.get("cert_d")
    if cert_d is not None and cert_d < thresholds.cert_expiring_days:
        alarms.add("cert_expiring")
    trust_d = readings.get("trust_d")
    if trust_d is not None and trust_d < thresholds.trust_expiring_days:
        alarms.add("trust_expiring")
    if readings.get("failed_to_sound"):
        alarms.add("failed_to_sound")
    if readings.get("storage"):
        alarms.add("storage_fault")
    return sorted(alarms)


def _round(value, digits: int):
    return None if value is None else round(float(value), digits)


def _int(value):
    return None if value is None else int(round(value))


def build_snapshot(
    node_id: str, birth: int, seq: int, readings: dict, now: float,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict:
    """The full status message. `readings` merges node.reporting.system.read_system() with what the loop
    knows: ver, clk, trust_d, net, play, relays, inputs, outbox, dropped, unstored, failed_to_sound."""
    clk = readings.get("clk") or {"ok": False, "src": None}   # the loop's ClockTrust verdict
    play = readings.get("play") or {"state": "idle", "item": None, "level": None}
    return {
        "v": PROTOCOL_VERSION,
        "node": node_id,
        "online": True,
        "birth": int(birth),
        "seq": int(seq),
        "ts": int(now),
        "ver": readings.get("ver", __version__),
        "up": _int(readings.get("up")),
        "temp": _round(readings.get("temp"), 1),
        "thr": list(readings.get("thr") or []),
        "load": _round(readings.get("load"), 2),
        "mem": _int(readings.get("mem")),
        "disk": _int(readings.get("disk")),
        "clk": {"ok": bool(clk.get("ok")), "src": clk.get("src")},
        "cert_d": _int(readings.get("cert_d")),
        "trust_d": _int(readings.get("trust_d")),
        "net": dict(readings.get("net") or {}),
        "play": dict(play),
        "relays": dict(readings.get("relays") or {}),
        "inputs": dict(readings.get("inputs") or {}),
        "alarms": alarms_from(readings, thresholds),
        "outbox": int(readings.get("outbox") or 0),
        "dropped": int(readings.get("dropped") or 0),
        "in_drop": int(readings.get("in_drop") or 0),
        "unstored": int(readings.get("unstored") or 0),
        **({"sw": dict(readings["sw"])} if readings.get("sw") else {}),
        "storage": sorted(readings.get("storage") or []),
    } | _drop_report(readings.get("outbox_drop"))


def _drop_report(drop: dict | None) -> dict:
    """`outbox_drop` appears only once the outbox's drop policy has acted (docs/heartbeat.md)."""
    if not drop or not any(drop.get(k) for k in ("events", "plays", "refused")):
        return {}
    return {"outbox_drop": {"events": int(drop.get("events") or 0), "plays": int(drop.get("plays") or 0),
                            "refused": int(drop.get("refused") or 0)}}


def will_payload(node_id: str, birth: int) -> dict:
    """What the broker publishes (retained) on spk/node/NODE/status when the node vanishes."""
    return {"v": PROTOCOL_VERSION, "node": node_id, "online": False, "birth": int(birth), "reason": "lost"}


def shutdown_payload(node_id: str, birth: int, seq: int, now: float) -> dict:
    """Published (retained) by a clean stop, so the district can tell "stopped" from "lost"."""
    return {
        "v": PROTOCOL_VERSION, "node": node_id, "online": False, "birth": int(birth),
        "seq": int(seq), "ts": int(now), "reason": "shutdown",
    }


def encode(payload: dict) -> bytes:
    """Compact JSON: no spaces, UTF-8 (operator names may be Vietnamese)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _moved(key: str, old, new) -> bool:
    if old == new:
        return False
    band = DEADBANDS.get(key)
    if band is None or not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return True
    return abs(new - old) >= band


def diff(baseline: dict, snapshot: dict) -> dict:
    """Changed fields of `snapshot` against what the receiver already has.

    Nested objects (net, play, relays, inputs, clk) are diffed one level deep: the delta carries only
    their changed members (a member that disappeared is sent as null). Lists are sent whole.
    """
    changed: dict = {}
    for key, new in snapshot.items():
        if key in ENVELOPE_KEYS or key in NOT_IN_DELTAS:
            continue
        old = baseline.get(key)
        if isinstance(new, dict) and isinstance(old, dict):
            inner = {k: v for k, v in new.items() if _moved(f"{key}.{k}", old.get(k), v)}
            inner.update({k: None for k, v in old.items() if k not in new and v is not None})
            if inner:
                changed[key] = inner
        elif _moved(key, old, new):
            changed[key] = new
    return changed


def apply_delta(status: dict, delta: dict) -> dict:
    """What a receiver does with a delta: merge it into the last status (one level deep)."""
    merged = dict(status)
    for key, value in delta.items():
        if key in ("v", "node"):
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


@dataclass
class Heartbeat:
    """Decides when to send a full snapshot and when a delta. Call on_connect() after every (re)connect
    and tick() about once a second; publish "full" retained QoS 1 on status, "delta" QoS 0 on delta."""

    node_id: str
    birth: int
    full_every_s: float = 900
    min_delta_interval_s: float = 5
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    seq: int = 0
    _baseline: dict | None = field(default=None, repr=False)
    _last_full: float = field(default=float("-inf"), repr=False)
    _last_delta: float = field(default=float("-inf"), repr=False)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def on_connect(self, now: float, readings: dict) -> dict:
        """A fresh full snapshot: whoever subscribes next gets it retained, and deltas restart from it."""
        snapshot = build_snapshot(self.node_id, self.birth, self._next_seq(), readings, now, self.thresholds)
        self._baseline = snapshot
        self._last_full = now
        return snapshot

    def tick(self, now: float, readings: dict) -> list[tuple[str, dict]]:
        if self._baseline is None or now - self._last_full >= self.full_every_s:
            return [("full", self.on_connect(now, readings))]
        candidate = build_snapshot(self.node_id, self.birth, self.seq, readings, now, self.thresholds)
        changes = diff(self._baseline, candidate)
        if not changes:
            return []
        urgent = any(key in URGENT_KEYS for key in changes)
        if not urgent and now - self._last_delta < self.min_delta_interval_s:
            return []  # not forgotten: the baseline is unchanged, so the next tick finds them again
        delta = {"v": PROTOCOL_VERSION, "node": self.node_id, "seq": self._next_seq(), "ts": int(now)}
        delta.update(changes)
        self._baseline = apply_delta(self._baseline, changes)
        self._last_delta = now
        return [("delta", delta)]

    @property
    def last_sent(self) -> dict | None:
        """What a receiver that got every message believes now: the last full snapshot with the deltas
        since merged in (None before the first snapshot). A copy: changing it changes nothing here."""
        return None if self._baseline is None else json.loads(json.dumps(self._baseline))

    def shutdown(self, now: float) -> dict:
        return shutdown_payload(self.node_id, self.birth, self._next_seq(), now)

    def will(self) -> dict:
        return will_payload(self.node_id, self.birth)
