"""Command bodies: strict parsing into typed, immutable objects, with an explicit cap on everything.

Unknown fields are rejected at every level ("malformed"): a new field means a new "v".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from node.errors import RemoteDataError
from node.trust import reasons
from node.trust.durations import parse_time
from node.trust.envelope import DEFAULT_MAX_ENVELOPE_BYTES, DEFAULT_MAX_SIGNATURES, strict_json

COMMAND_TYPES = ("play", "stop", "schedule", "live", "config", "time", "update")
LEVELS = ("normal", "priority", "emergency")
CODECS = ("mp3", "ogg", "opus", "wav", "aac", "flac")
_DAY = 86400.0


@dataclass(frozen=True)
class Limits:
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    max_signatures: int = DEFAULT_MAX_SIGNATURES
    max_targets: int = 64
    max_string: int = 256          # ids, titles, zone names, setting keys and string values
    max_url: int = 2048
    max_zones: int = 16
    max_playlist: int = 100
    max_slots: int = 64
    max_once: int = 256
    max_settings: int = 64
    audio_max_bytes: int = 200 * 1024 * 1024
    audio_max_duration: float = 4 * 3600.0
    live_max_duration: float = 12 * 3600.0
    skew_seconds: float = 30.0
    # Longest allowed expires - not_before per command type: a stolen-but-unreleased command can do
    # harm for at most this long. Schedules and configs are standing orders, so they get a year.
    max_validity: Any = field(hash=False, default_factory=lambda: MappingProxyType({
        "play": 31 * _DAY, "stop": 1 * _DAY, "live": 1 * _DAY, "time": 3600.0,
        "schedule": 400 * _DAY, "config": 400 * _DAY, "update": 31 * _DAY,
    }))


DEFAULT_LIMITS = Limits()

_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TARGET = re.compile(r"^(\d{5}-\d{2}|[cdp]\d{1,6}|all)$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_TIMEZONE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$|^UTC$")
_SETTING_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,5}$")


@dataclass(frozen=True)
class ContentItem:
    content_id: str
    url: str | None
    sha256: str
    length: int
    duration: float
    codec: str
    volume: int | None = None
    zones: tuple[str, ...] | None = None
    title: str | None = None


@dataclass(frozen=True)
class PlayBody:
    content: ContentItem
    level: str
    start_at: dt.datetime | None = None


@dataclass(frozen=True)
class StopBody:
    content_id: str | None
    level: str | None
    all: bool


@dataclass(frozen=True)
class LiveSource:
    url: str
    codec: str | None = None


@dataclass(frozen=True)
class Slot:
    id: str
    weekdays: tuple[int, ...]
    start: str
    duration: float
    level: str
    volume: int | None
    playlist: tuple[ContentItem, ...] | None
    live: LiveSource | None


@dataclass(frozen=True)
class OnceItem:
    id: str
    at: dt.datetime
    duration: float
    level: str
    volume: int | None
    playlist: tuple[ContentItem, ...] | None
    live: LiveSource | None


@dataclass(frozen=True)
class ScheduleBody:
    version: int
    timezone: str
    slots: tuple[Slot, ...]
    once: tuple[OnceItem, ...]


@dataclass(frozen=True)
class LiveBody:
    url: str
    max_duration: float
    level: str
    volume: int | None
    grace: float = 30.0


@dataclass(frozen=True)
class ConfigBody:
    version: int
    settings: MappingProxyType


@dataclass(frozen=True)
class TimeBody:
    time: dt.datetime


@dataclass(frozen=True)
class UpdateBody:
    """Install the embedded signed release (node/update/release.py), wheels fetched from files_url."""
    release: bytes
    files_url: str
    rollout_percent: int | None = None
    rollout_salt: str | None = None


@dataclass(frozen=True)
class Command:
    type: str
    id: str
    issued_at: dt.datetime
    not_before: dt.datetime
    expires: dt.datetime
    targets: tuple[str, ...]
    body: PlayBody | StopBody | ScheduleBody | LiveBody | ConfigBody | TimeBody | UpdateBody
    payload: bytes = field(repr=False, default=b"")

    @property
    def level(self) -> str | None:
        return getattr(self.body, "level", None)

    @property
    def version(self) -> int | None:
        return getattr(self.body, "version", None)


class _Reader:
    """Field checks that name the offending path in the error detail."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def fail(self, where: str, problem: str) -> RemoteDataError:
        return RemoteDataError(reasons.MALFORMED, f"{where} {problem}")

    def limit(self, where: str, problem: str) -> RemoteDataError:
        return RemoteDataError(reasons.LIMIT_EXCEEDED, f"{where} {problem}")

    def obj(self, value, where: str, required: tuple, optional: tuple = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object")
        for name in required:
            if name not in value:
                raise self.fail(f"{where}.{name}", "is missing")
        for name in value:
            if name not in required and name not in optional:
                raise self.fail(f"{where}.{str(name)[:40]}", "is not a known field")
        return value

    def string(self, value, where: str, *, pattern=None, max_len=None, nullable=False):
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self.fail(where, "must be a string")
        max_len = max_len or self.limits.max_string
        if len(value) > max_len:
            raise self.limit(where, f"is {len(value)} characters, limit {max_len}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"has an invalid value {value[:40]!r}")
        return value

    def choice(self, value, where: str, options, nullable=False):
        if value is None and nullable:
            return None
        if not isinstance(value, str) or value not in options:
            raise self.fail(where, f"must be one of {', '.join(options)}")
        return value

    def integer(self, value, where: str, low: int, high: int, nullable=False):
        if value is None and nullable:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(where, "must be an integer")
        if not low <= value <= high:
            raise self.fail(where, f"must be between {low} and {high}")
        return value

    def number(self, value, where: str, low: float, high: float, *, too_big_is_limit=False) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(where, "must be a number")
        if value > high and too_big_is_limit:
            raise self.limit(where, f"is {value}, limit {high}")
        if not low <= value <= high:
            raise self.fail(where, f"must be between {low} and {high}")
        return float(value)

    def time(self, value, where: str, nullable=False):
        if value is None and nullable:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None

    def url(self, value, where: str, schemes=("https",), nullable=False):
        value = self.string(value, where, max_len=self.limits.max_url, nullable=nullable)
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest or any(c.isspace() for c in value):
            raise self.fail(where, f"must be a {' or '.join(schemes)} URL")
        return value

    def live_url(self, value, where: str) -> str:
        """A live stream is played as it arrives, with no signed hash to check it against: only the TLS
        session (district CA, our client certificate) says the bytes come from the district. So https
        only; a well-formed http URL gets its own code, for the district to fix its relay."""
        value = self.url(value, where, ("http", "https"))
        if not value.startswith("https://"):
            raise RemoteDataError(reasons.LIVE_URL_REFUSED, f"{where} must be an https URL, not {value[:64]}")
        return value

    def listof(self, value, where: str, max_items: int, *, nonempty=False) -> list:
        if not isinstance(value, list):
            raise self.fail(where, "must be a list")
        if len(value) > max_items:
            raise self.limit(where, f"has {len(value)} items, limit {max_items}")
        if nonempty and not value:
            raise self.fail(where, "must not be empty")
        return value

    # -- composite pieces --------------------------------------------------------------------------
    def content(self, value, where: str, *, extra=()) -> tuple[ContentItem, dict]:
        fields = ("content_id", "url", "sha256", "length", "duration", "codec")
        item = self.obj(value, where, fields, ("volume", "zones", "title") + tuple(extra))
        zones = item.get("zones")
        if zones is not None:
            zones = tuple(self.string(z, f"{where}.zones[{i}]", pattern=_NAME)
                          for i, z in enumerate(self.listof(zones, f"{where}.zones", self.limits.max_zones)))
        length = item["length"]
        if isinstance(length, int) and not isinstance(length, bool) and length > self.limits.audio_max_bytes:
            raise self.limit(f"{where}.length", f"is {length} bytes, limit {self.limits.audio_max_bytes}")
        content = ContentItem(
            content_id=self.string(item["content_id"], f"{where}.content_id", pattern=_NAME),
            url=self.url(item["url"], f"{where}.url", nullable=True),
            sha256=self.string(item["sha256"], f"{where}.sha256", pattern=_SHA256),
            length=self.integer(length, f"{where}.length", 1, self.limits.audio_max_bytes),
            duration=self.number(item["duration"], f"{where}.duration", 0.001, self.limits.audio_max_duration,
                                 too_big_is_limit=True),
            codec=self.choice(item["codec"], f"{where}.codec", CODECS),
            volume=self.integer(item.get("volume"), f"{where}.volume", 0, 100, nullable=True),
            zones=zones,
            title=self.string(item.get("title"), f"{where}.title", nullable=True),
        )
        return content, item

    def source(self, item: dict, where: str):
        """A slot or once item plays either a playlist or a live stream, never both."""
        has_playlist, has_live = "playlist" in item, "live" in item
        if has_playlist == has_live:
            raise self.fail(where, "needs exactly one of playlist or live")
        if has_playlist:
            raw = self.listof(item["playlist"], f"{where}.playlist", self.limits.max_playlist, nonempty=True)
            return tuple(self.content(x, f"{where}.playlist[{i}]")[0] for i, x in enumerate(raw)), None
        live = self.obj(item["live"], f"{where}.live", ("url",), ("codec",))
        return None, LiveSource(self.live_url(live["url"], f"{where}.live.url"),
                                self.choice(live.get("codec"), f"{where}.live.codec", CODECS, nullable=True))


def _play(r: _Reader, body) -> PlayBody:
    content, item = r.content(body, "body", extra=("level", "start_at"))
    if "level" not in item:
        raise r.fail("body.level", "is missing")
    return PlayBody(content, r.choice(item["level"], "body.level", LEVELS),
                    r.time(item.get("start_at"), "body.start_at", nullable=True))


def _stop(r: _Reader, body) -> StopBody:
    body = r.obj(body, "body", (), ("content_id", "level", "all"))
    content_id = r.string(body.get("content_id"), "body.content_id", pattern=_NAME, nullable=True)
    level = r.choice(body.get("level"), "body.level", LEVELS, nullable=True)
    stop_all = body.get("all", False)
    if not isinstance(stop_all, bool):
        raise r.fail("body.all", "must be true or false")
    if (content_id is not None) + (level is not None) + stop_all != 1:
        raise r.fail("body", "needs exactly one of content_id, level or all")
    return StopBody(content_id, level, stop_all)


def _schedule(r: _Reader, body) -> ScheduleBody:
    body = r.obj(body, "body", ("version", "timezone", "slots"), ("once",))
    common = ("volume", "playlist", "live")   # optional in slots and once items alike
    slots = []
    for i, raw in enumerate(r.listof(body["slots"], "body.slots", r.limits.max_slots)):
        where = f"body.slots[{i}]"
        raw = r.obj(raw, where, ("id", "weekdays", "start", "duration", "level"), common)
        days = r.listof(raw["weekdays"], f"{where}.weekdays", 7, nonempty=True)
        weekdays = tuple(r.integer(d, f"{where}.weekdays[{j}]", 1, 7) for j, d in enumerate(days))
        playlist, live = r.source(raw, where)
        slots.append(Slot(
            r.string(raw["id"], f"{where}.id", pattern=_NAME), weekdays,
            r.string(raw["start"], f"{where}.start", pattern=_HHMM),
            r.number(raw["duration"], f"{where}.duration", 1, _DAY),
            r.choice(raw["level"], f"{where}.level", ("normal", "priority")),
            r.integer(raw.get("volume"), f"{where}.volume", 0, 100, nullable=True), playlist, live))
    once = []
    for i, raw in enumerate(r.listof(body.get("once", []), "body.once", r.limits.max_once)):
        where = f"body.once[{i}]"
        raw = r.obj(raw, where, ("id", "at", "duration", "level"), common)
        playlist, live = r.source(raw, where)
        once.append(OnceItem(
            r.string(raw["id"], f"{where}.id", pattern=_NAME), r.time(raw["at"], f"{where}.at"),
            r.number(raw["duration"], f"{where}.duration", 1, _DAY),
            r.choice(raw["level"], f"{where}.level", ("normal", "priority")),
            r.integer(raw.get("volume"), f"{where}.volume", 0, 100, nullable=True), playlist, live))
    return ScheduleBody(r.integer(body["version"], "body.version", 1, 2**53),
                        r.string(body["timezone"], "body.timezone", pattern=_TIMEZONE, max_len=64),
                        tuple(slots), tuple(once))


def _live(r: _Reader, body) -> LiveBody:
    body = r.obj(body, "body", ("url", "max_duration", "level"), ("volume", "grace"))
    return LiveBody(
        r.live_url(body["url"], "body.url"),
        r.number(body["max_duration"], "body.max_duration", 1, r.limits.live_max_duration,
                 too_big_is_limit=True),
        r.choice(body["level"], "body.level", LEVELS),
        r.integer(body.get("volume"), "body.volume", 0, 100, nullable=True),
        r.number(body.get("grace", 30), "body.grace", 0, 600),
    )


def _config(r: _Reader, body) -> ConfigBody:
    body = r.obj(body, "body", ("version", "settings"))
    settings = body["settings"]
    if not isinstance(settings, dict):
        raise r.fail("body.settings", "must be an object")
    if len(settings) > r.limits.max_settings:
        raise r.limit("body.settings", f"has {len(settings)} entries, limit {r.limits.max_settings}")
    for key, value in settings.items():
        r.string(key, "body.settings key", pattern=_SETTING_KEY, max_len=128)
        where = f"body.settings.{key}"
        if isinstance(value, str):
            r.string(value, where)
        elif isinstance(value, list):
            for i, x in enumerate(r.listof(value, where, 32)):
                if not isinstance(x, (str, int, float, bool)):
                    raise r.fail(f"{where}[{i}]", "must be a scalar")
                if isinstance(x, str):
                    r.string(x, f"{where}[{i}]")
        elif value is not None and not isinstance(value, (int, float, bool)):
            raise r.fail(where, "must be a scalar or a list of scalars")
    return ConfigBody(r.integer(body["version"], "body.version", 1, 2**53), MappingProxyType(dict(settings)))


def _time_body(r: _Reader, body) -> TimeBody:
    body = r.obj(body, "body", ("time",))
    return TimeBody(r.time(body["time"], "body.time"))


def _update(r: _Reader, body) -> UpdateBody:
    body = r.obj(body, "body", ("release", "files_url"), ("rollout",))
    release = r.string(body["release"], "body.release", max_len=32768)
    files_url = r.url(body["files_url"], "body.files_url")
    rollout = body.get("rollout")
    percent = salt = None
    if rollout is not None:
        rollout = r.obj(rollout, "body.rollout", ("percent", "salt"))
        percent = r.integer(rollout["percent"], "body.rollout.percent", 1, 100)
        salt = r.string(rollout["salt"], "body.rollout.salt", pattern=_NAME)
    return UpdateBody(release.encode(), files_url, percent, salt)


_BODY_PARSERS = {"play": _play, "stop": _stop, "schedule": _schedule, "live": _live, "config": _config,
                 "time": _time_body, "update": _update}


def parse_command(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Command:
    """Payload bytes (already signature-checked) -> Command, or RemoteDataError with a reason code."""
    r = _Reader(limits)
    document = strict_json(payload, "command")
    if not isinstance(document, dict):
        raise r.fail("command", "must be a JSON object")
    if "v" in document and (document["v"] != 1 or isinstance(document["v"], bool)):
        raise RemoteDataError(reasons.UNSUPPORTED_VERSION, f"command v={str(document['v'])[:20]}")
    if "type" in document and document["type"] not in COMMAND_TYPES:
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"command type {str(document['type'])[:40]!r}")
    document = r.obj(document, "command",
                     ("v", "type", "id", "issued_at", "not_before", "expires", "targets", "body"))
    command_id = r.string(document["id"], "id", pattern=_ID, max_len=64)
    raw_targets = r.listof(document["targets"], "targets", limits.max_targets, nonempty=True)
    targets = tuple(r.string(t, f"targets[{i}]", pattern=_TARGET, max_len=16)
                    for i, t in enumerate(raw_targets))
    not_before = r.time(document["not_before"], "not_before")
    expires = r.time(document["expires"], "expires")
    if expires <= not_before:
        raise r.fail("expires", "must be after not_before")
    body = _BODY_PARSERS[document["type"]](r, document["body"])
    if isinstance(body, PlayBody) and body.start_at is not None and body.start_at >= expires:
        raise r.fail("body.start_at", "must be before expires")
    return Command(document["type"], command_id, r.time(document["issued_at"], "issued_at"), not_before,
                   expires, targets, body, payload)
