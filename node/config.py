"""Node configuration: one TOML file, a schema with defaults, and every problem reported at once.

`speaker-node check-config FILE` prints the problems; the daemon exits 78 (EX_CONFIG) on any of them.
Each problem names the key ("broker.keepalive") and, for unknown keys, the nearest known one.

SCHEMA is the one source: each key's converter, default and type. Every section becomes a frozen
dataclass generated from it (cfg.broker is a BrokerSection; cfg.relays.amplifier a PinSpec or None),
so nothing can change a setting behind the schema's back. The only change after start-up is a signed
remote setting, already validated by the same schema, through Config.apply_validated
(node/service/settings.py). node/data/node.example.toml documents every key with its default
(tests/test_config_schema.py checks it against SCHEMA).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tomllib
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from node.errors import EX_CONFIG, ConfigError

DEFAULT_PATH = "/etc/speaker-node/node.toml"
NODE_ID_RE = re.compile(r"^\d{5}-\d{2}$")
GROUP_RE = re.compile(r"^(c\d{5}|d\d{3}|p\d{2}|all)$")
HOSTPORT_RE = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class Invalid(ValueError):
    """Raised by a field converter; the message says what was expected."""


def _returns(kind):
    """Tag a converter with the type of what it returns (the generated dataclasses' field types)."""
    def tag(convert):
        convert.type = kind
        return convert

    return tag


@_returns(float)
def parse_duration(value: Any) -> float:
    """Seconds from 90, 1.5, "90s", "30m", "2h", "7d", "250ms"."""
    if isinstance(value, bool):
        raise Invalid("expected a duration such as 30, \"90s\", \"15m\", \"2h\" or \"7d\"")
    if isinstance(value, (int, float)):
        if value < 0:
            raise Invalid("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise Invalid(f"expected a duration such as 30, \"90s\", \"15m\", \"2h\" or \"7d\", got {value!r}")


# --- field converters -------------------------------------------------------------------------


def _typed(kind: type, name: str) -> Callable[[Any], Any]:
    @_returns(kind)
    def convert(value):
        if isinstance(value, bool) and kind is not bool:
            raise Invalid(f"expected {name}, got a boolean")
        if not isinstance(value, kind):
            raise Invalid(f"expected {name}, got {type(value).__name__} {value!r}")
        return value

    return convert


STR = _typed(str, "a string")
BOOL = _typed(bool, "true or false")
INT = _typed(int, "an integer")


def ranged(convert, low=None, high=None):
    @_returns(convert.type)
    def check(value):
        value = convert(value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise Invalid(f"must be between {low} and {high}, got {value}")
        return value

    return check


def matching(regex: re.Pattern, example: str):
    @_returns(str)
    def check(value):
        value = STR(value)
        if not regex.match(value):
            raise Invalid(f"{value!r} is not valid (expected something like {example!r})")
        return value

    return check


def list_of(convert, min_len=0):
    @_returns(list[convert.type])
    def check(value):
        if not isinstance(value, list):
            raise Invalid(f"expected a list, got {type(value).__name__}")
        if len(value) < min_len:
            raise Invalid(f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
        problems, out = [], []
        for i, item in enumerate(value):
            try:
                out.append(convert(item))
            except Invalid as exc:
                problems.append(f"[{i}]: {exc}")
        if problems:
            raise Invalid("; ".join(problems))
        return out

    return check


@dataclass(frozen=True)
class PinSpec:
    """A GPIO line: BCM pin number, which level means "on", and a name (zones)."""

    pin: int
    active_high: bool = True
    name: str | None = None


@_returns(PinSpec)
def pin_spec(value) -> PinSpec:
    """{pin = 17, active_high = true} -> PinSpec(pin, active_high, name)."""
    if not isinstance(value, dict):
        raise Invalid("expected a table like { pin = 17, active_high = true }")
    unknown = set(value) - {"pin", "active_high", "name"}
    if unknown:
        raise Invalid(f"unknown key(s) {sorted(unknown)} (known: pin, active_high, name)")
    if "pin" not in value:
        raise Invalid("missing 'pin'")
    pin = ranged(INT, 0, 53)(value["pin"])
    active_high = BOOL(value.get("active_high", True))
    return PinSpec(pin=pin, active_high=active_high, name=value.get("name"))


@_returns(PinSpec)
def zone_spec(value) -> PinSpec:
    spec = pin_spec(value)
    if not spec.name or not isinstance(spec.name, str):
        raise Invalid("each zone needs a 'name'")
    return spec


def optional(convert):
    @_returns(Optional[convert.type])
    def check(value):
        return None if value in ("", None) else convert(value)

    return check


# --- schema -------------------------------------------------------------------------------------

REQUIRED = object()


@dataclass(frozen=True)
class F:
    convert: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""

    @property
    def type(self):
        return getattr(self.convert, "type", Any)


SCHEMA: dict[str, dict[str, F]] = {
    "node": {
        "id": F(matching(NODE_ID_RE, "27787-03"), REQUIRED, "commune code + cluster number"),
        "groups": F(list_of(matching(GROUP_RE, "c27787")), [], "c<commune>, d<district>, p<province>"),
        "timezone": F(STR, "Asia/Ho_Chi_Minh"),
        "simulate": F(BOOL, False, "wire simulated hardware (MockFactory pins, WAV output, pty modem)"),
    },
    "broker": {
        "servers": F(list_of(matching(HOSTPORT_RE, "broker.example.vn:8883"), 1), REQUIRED,
                     "host:port, tried in order"),
        "topic_prefix": F(matching(re.compile(r"^[A-Za-z0-9_-]{1,32}$"), "spk"), "spk"),
        "ca_file": F(STR, "/etc/speaker-node/ca.crt"),
        "cert_file": F(STR, "/etc/speaker-node/node.crt"),
        "key_file": F(STR, "/etc/speaker-node/node.key"),
        "keepalive": F(ranged(INT, 10, 3600), 60),
        "reconnect_min": F(ranged(parse_duration, 0.1, 60), 1.0),
        "reconnect_max": F(ranged(parse_duration, 1, 3600), 120.0),
        "session_expiry": F(ranged(parse_duration, 0, 30 * 86400), 7 * 86400.0),
        # after a failover, how often (with jitter) to check whether the first broker is back
        "failback_interval": F(ranged(parse_duration, 1, 86400), 300.0),
    },
    "trust": {
        "file": F(STR, "/etc/speaker-node/trust.json"),
        "max_message_bytes": F(ranged(INT, 1024, 4 * 1024 * 1024), 65536),
        "clock_skew": F(ranged(parse_duration, 0, 600), 30.0),
        "max_validity": F(ranged(parse_duration, 60, 400 * 86400), 31 * 86400.0),
    },
    "storage": {
        "state_dir": F(STR, "/var/lib/speaker-node"),
        "cache_dir": F(STR, "", "audio cache; empty: <state_dir>/cache"),
        # tmpfs: the daemon lock and the latest status for selftest; simulated nodes get their own, so
        # several can share one machine
        "runtime_dir": F(STR, "", "daemon lock and status (tmpfs); empty: /run/speaker-node, or "
                                  "<state_dir>/run when simulating"),
        "cache_quota_mb": F(ranged(INT, 16, 1 << 20), 2048),
        # how often a degraded store (full, read-only or failing medium) is tried again (docs/storage.md)
        "fault_retry": F(ranged(parse_duration, 1, 3600), 30.0),
    },
    "audio": {
        "output": F(matching(re.compile(r"^(alsa|wav)$"), "alsa"), "alsa"),
        "device": F(STR, "default"),
        "wav_dir": F(STR, "", "where output = \"wav\" writes what would play; empty: <state_dir>/wav"),
        "default_volume": F(ranged(INT, 0, 100), 80),
        "max_audio_mb": F(ranged(INT, 1, 4096), 200),
        "max_duration": F(ranged(parse_duration, 1, 86400), 7200.0),
        "max_queue": F(ranged(INT, 1, 1024), 32),
    },
    "relays": {
        "amplifier": F(optional(pin_spec), None),
        "zones": F(list_of(zone_spec), []),
        "warmup": F(ranged(parse_duration, 0, 60), 2.0),
        "tail": F(ranged(parse_duration, 0, 60), 1.0),
        "idle_hold": F(ranged(parse_duration, 0, 3600), 30.0),
        "min_off": F(ranged(parse_duration, 0, 600), 5.0),
    },
    "inputs": {
        "door": F(optional(pin_spec), None),
        "mains": F(optional(pin_spec), None),
        "amp_fault": F(optional(pin_spec), None),
        "relay_feedback": F(optional(pin_spec), None),
        "debounce": F(ranged(parse_duration, 0, 5), 0.05),
    },
    "modem": {
        "enabled": F(BOOL, True),
        "port": F(STR, "/dev/ttyModemAT"),
        "baud": F(ranged(INT, 1200, 4_000_000), 115200),
        "poll_interval": F(ranged(parse_duration, 5, 3600), 60.0),
        "power_cycle": F(optional(pin_spec), None),
        "no_link_after": F(ranged(parse_duration, 30, 86400), 300.0),
    },
    "health": {
        "heartbeat_full": F(ranged(parse_duration, 30, 86400), 900.0),
        "delta_min_interval": F(ranged(parse_duration, 0, 3600), 5.0),
        "outbox_max_rows": F(ranged(INT, 100, 10_000_000), 50000),
        # a record the broker took is sent again until the district's store acknowledges it
        "resend_after": F(ranged(parse_duration, 0.1, 86400), 60.0),
        "resend_max": F(ranged(parse_duration, 0.1, 86400), 3600.0),
    },
    "clock": {
        "ntp_sync_file": F(STR, "/run/systemd/timesync/synchronized",
                           "exists once NTP synchronised the clock; \"\" = never (simulation default)"),
        "rtc_file": F(STR, "/sys/class/rtc/rtc0/since_epoch",
                      "hardware clock seconds since the epoch, when the board has one; \"\" = none"),
        "wall_offset": F(ranged(parse_duration, 0, 1e10), 0.0,
                         "simulation only: seconds added to the wall clock (a wrong NTP clock in tests)"),
        "await_signed": F(ranged(parse_duration, 0, 60), 5.0,
                          "after connecting, decisions that depend on the clock wait this long for the first "
                          "signed time answer before NTP/RTC/cellular time may decide them (0 = at once)"),
        "time_refresh": F(ranged(parse_duration, 60, 86400), 7200.0,
                          "how often a node that has signed time asks again (bounds drift, checks NTP; "
                          "one exchange is ~660 B of TLS, 870 B on the air: 2 h keeps a quiet node "
                          "within the 150 kB/day TLS budget, 15 min would not)"),
    },
    "update": {
        # The release tree (releases/VERSION, current, committed). "" = the tree this daemon runs from
        # (its venv is ROOT/releases/VERSION/venv), or none: a developer install is not updatable.
        "root": F(STR, ""),
        # privileged: the root-only speaker-update.service installs and switches (a node);
        # inline: the daemon does it itself (simulation, where it owns the tree).
        "install": F(matching(re.compile(r"^(inline|privileged)$"), "privileged"), "privileged"),
        # systemd: exit 75 and let the unit start the new version; exec: re-execute through the guard.
        "restart": F(matching(re.compile(r"^(systemd|exec)$"), "systemd"), "systemd"),
        "health_deadline": F(ranged(parse_duration, 10, 3600), 300.0),
        "quiet_before_slot": F(ranged(parse_duration, 0, 6 * 3600), 600.0),
    },
}


def _section_class(section: str, fields: dict[str, F]) -> type:
    name = "".join(part.title() for part in section.split("_")) + "Section"
    cls = make_dataclass(name, [(key, spec.type) for key, spec in fields.items()], frozen=True,
                         namespace={"__doc__": f"[{section}] of node.toml (generated from config.SCHEMA)"})
    cls.__module__ = __name__
    return cls


# One frozen dataclass per section, generated from SCHEMA (a key added there is a field here).
SECTION_CLASSES: dict[str, type] = {section: _section_class(section, fields) for section, fields in SCHEMA.items()}


@dataclass
class Config:
    """Attribute access by section: cfg.broker.servers. `source` is the file it came from."""

    sections: dict[str, Any]
    source: str = ""
    raw: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def all_groups(self) -> list[str]:
        return sorted(set(self.node.groups) | {"all"})

    def with_values(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some values replaced, e.g. with_values(audio={"output": "wav"}) (already valid
        values only: the self-test forcing WAV output on a simulated node)."""
        changed = dict(self.sections)
        for section, values in sections.items():
            changed[section] = replace(changed[section], **values)
        return Config(sections=changed, source=self.source, raw=self.raw)

    def apply_validated(self, key: str, value: Any) -> None:
        """The one change after start-up: a signed remote setting ("relays.warmup") whose value the
        schema has already checked (node/service/settings.py). Sections stay immutable; this config
        (shared by the running services) gets the new section."""
        section, name = key.split(".", 1)
        self.sections[section] = replace(self.sections[section], **{name: value})


def _near(name: str, known) -> str:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def validate(data: dict, source: str = "") -> Config:
    problems: list[str] = []
    values_by_section: dict[str, dict[str, Any]] = {}
    for name in data:
        if name not in SCHEMA:
            problems.append(f"[{name}]: unknown section{_near(name, SCHEMA)}")
    for section, fields in SCHEMA.items():
        given = data.get(section, {})
        if not isinstance(given, dict):
            problems.append(f"[{section}]: expected a table")
            given = {}
        for key in given:
            if key not in fields:
                problems.append(f"{section}.{key}: unknown key{_near(key, fields)}")
        values = {}
        for key, spec in fields.items():
            if key in given:
                try:
                    values[key] = spec.convert(given[key])
                except Invalid as exc:
                    problems.append(f"{section}.{key}: {exc}")
            elif spec.default is REQUIRED:
                problems.append(f"{section}.{key}: required but missing")
            else:
                values[key] = list(spec.default) if isinstance(spec.default, list) else spec.default
        values_by_section[section] = values

    if not problems:
        problems += _cross_checks(values_by_section)
    if problems:
        raise ConfigError(problems)
    _resolve_paths(values_by_section, Path(source).resolve().parent if source else None)
    _fill_derived(values_by_section)
    if values_by_section["node"]["simulate"]:
        _simulated_defaults(values_by_section, data)
    else:
        values_by_section["clock"]["wall_offset"] = 0.0  # never on a real node
    sections = {section: SECTION_CLASSES[section](**values) for section, values in values_by_section.items()}
    return Config(sections=sections, source=source, raw=data)


def _simulated_defaults(s: dict[str, dict], data: dict) -> None:
    """Simulation swaps what cannot exist on a laptop: the sound card becomes WAV files in
    audio.wav_dir (GPIO pins become gpiozero's MockFactory in the wiring; modem.port = "sim" selects
    the pty modem simulator). The host's NTP flag and RTC are not the simulated node's: unless the file
    names them, a simulated node has neither (its time comes from the district's signed answers)."""
    s["audio"]["output"] = "wav"
    s["update"]["install"] = "inline"  # no speaker-update.service on a laptop: the daemon owns its tree
    s["update"]["restart"] = "exec"
    clock = data.get("clock") or {}
    for key in ("ntp_sync_file", "rtc_file"):
        if key not in clock:
            s["clock"][key] = ""


def _cross_checks(s: dict[str, dict]) -> list[str]:
    problems = []
    if s["broker"]["reconnect_min"] > s["broker"]["reconnect_max"]:
        problems.append("broker.reconnect_min: must not exceed broker.reconnect_max")
    pins: dict[int, str] = {}
    named = [("relays.amplifier", s["relays"]["amplifier"]), ("modem.power_cycle", s["modem"]["power_cycle"])]
    named += [(f"relays.zones[{z.name}]", z) for z in s["relays"]["zones"]]
    named += [(f"inputs.{k}", s["inputs"][k]) for k in ("door", "mains", "amp_fault", "relay_feedback")]
    for where, spec in named:
        if spec is None:
            continue
        if spec.pin in pins:
            problems.append(f"{where}: GPIO {spec.pin} is already used by {pins[spec.pin]}")
        pins[spec.pin] = where
    zone_names = [z.name for z in s["relays"]["zones"]]
    if len(zone_names) != len(set(zone_names)):
        problems.append("relays.zones: zone names must be unique")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(s["node"]["timezone"])
    except Exception:
        problems.append(f"node.timezone: unknown time zone {s['node']['timezone']!r}")
    return problems


# File and directory settings; a relative path is relative to the directory of the config file, so a
# node folder made by `speaker-provision node new` works as it is on a laptop and in /etc/speaker-node.
PATH_KEYS = (("broker", "ca_file"), ("broker", "cert_file"), ("broker", "key_file"), ("trust", "file"),
             ("storage", "state_dir"), ("storage", "cache_dir"), ("storage", "runtime_dir"),
             ("audio", "wav_dir"))


def _resolve_paths(s: dict[str, dict], base: Path | None) -> None:
    if base is None:
        return
    for section, key in PATH_KEYS:
        value = s[section][key]
        if value and not Path(value).is_absolute():
            s[section][key] = str(base / value)


def _fill_derived(s: dict[str, dict]) -> None:
    state = Path(s["storage"]["state_dir"])
    if not s["storage"]["runtime_dir"]:
        s["storage"]["runtime_dir"] = str(state / "run") if s["node"]["simulate"] else "/run/speaker-node"
    if not s["storage"]["cache_dir"]:
        s["storage"]["cache_dir"] = str(state / "cache")
    if not s["audio"]["wav_dir"]:
        s["audio"]["wav_dir"] = str(state / "wav")


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return validate(data, str(path))


def load_config_simulated(path: str | Path) -> Config:
    """The same file with node.simulate forced on (`--simulate`), so derived paths follow it."""
    cfg = load_config(path)
    raw = {k: dict(v) for k, v in cfg.raw.items()}
    raw.setdefault("node", {})["simulate"] = True
    return validate(raw, str(path))


def report(exc: ConfigError, source: str) -> str:
    lines = [f"speaker-node: invalid configuration {source} ({len(exc.problems)} problem(s)):"]
    lines += [f"  - {p}" for p in exc.problems]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """speaker-node check-config FILE"""
    parser = argparse.ArgumentParser(prog="speaker-node check-config", description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(report(exc, args.file), file=sys.stderr)
        return EX_CONFIG
    loopback, unresolved = broker_problems(cfg)
    if loopback:
        print(report(ConfigError(loopback), args.file), file=sys.stderr)
        return EX_CONFIG
    for problem in unresolved:  # from a laptop or a pole without data the name may not resolve yet
        print(f"speaker-node: warning: {problem}", file=sys.stderr)
    print(f"{args.file}: OK (node {cfg.node.id}, groups {', '.join(cfg.all_groups)}, "
          f"brokers {', '.join(cfg.broker.servers)})")
    return 0


def broker_problems(cfg: Config, resolve=None) -> tuple[list[str], list[str]]:
    """(loopback, unresolvable) broker addresses. Loopback is valid TOML but on a pole means the node
    itself (allowed when simulated: the district then runs on the same machine); a name that does not
    resolve makes the node report 'broker unreachable' and the technician suspect the 4G link."""
    from node.brokeraddr import loopback_problem, resolve_problem

    loopback, unresolved = [], []
    for server in cfg.broker.servers:
        problem = None if cfg.node.simulate else loopback_problem(server)
        if problem:
            loopback.append(f"broker.servers: {problem}")
        elif problem := (resolve or resolve_problem)(server):
            unresolved.append(f"broker.servers: {problem}")
    return loopback, unresolved
