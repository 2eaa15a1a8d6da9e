"""The individual checks of `speaker-node selftest`. Each returns CheckResult(s) with a stable id.

A check never raises for a faulty node: a missing file, a dead modem or a stuck relay is a failed line
with a hint for the technician. `say(message_id, **values)` renders node.messages in the chosen language.
Decisions that need no hardware (judge_modem, judge_input, days-left rules) are pure functions.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import ssl
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node.messages import MESSAGES
from node.topics import mqtt_client_id

FAIL_DAYS = 7  # certificate / trust document: fail below this many days left
WARN_DAYS = 30  # ... and pass with a warning below this
MIN_FREE_MB = 200
BROKER_TIMEOUT = 10.0
FEEDBACK_SETTLE = 0.5  # a relay contact closes in ~10-20 ms; allow bounce and a slow contactor
WEAK_RSRP_DBM = -110
WEAK_RSSI_DBM = -100
INPUT_CHECKS = ("door", "mains", "amp_fault")

Say = Callable[..., str]


@dataclass
class CheckResult:
    id: str
    ok: bool | None  # None = skipped
    detail: str
    hint: str = ""
    warn: bool = False  # passed, but the technician should act soon

    def to_json(self) -> dict:
        return {"id": self.id, "ok": self.ok, "detail": self.detail, "hint": self.hint, "warn": self.warn}


# --- the running service ----------------------------------------------------------------------------


def daemon_running(run_dir: str) -> bool:
    """True while `speaker-node run` holds its exclusive flock on <runtime_dir>/daemon.lock."""
    try:
        fd = os.open(Path(run_dir) / "daemon.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot even look: assume the service owns the hardware rather than fight it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_service_status(run_dir: str) -> dict | None:
    """The daemon's runtime status (<runtime_dir>/status.json), or None when absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- time-limited credentials -----------------------------------------------------------------------


def local_date(when: dt.datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d")


def expiry_verdict(days_left: float) -> str:
    """'expired' | 'expiring' (fails) | 'soon' (passes with a warning) | 'ok'."""
    if days_left <= 0:
        return "expired"
    if days_left < FAIL_DAYS:
        return "expiring"
    if days_left < WARN_DAYS:
        return "soon"
    return "ok"


def _shown_days(days_left: float) -> int:
    return max(0, round(days_left))


def check_certificate(cfg, say: Say, now: dt.datetime, clock_synced: bool) -> CheckResult:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    b = cfg.broker
    try:
        cert = x509.load_pem_x509_certificate(Path(b.cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(b.key_file).read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(Path(b.ca_file).read_bytes())
    except OSError as exc:
        return CheckResult(
            "certificate",
            False,
            say("cert_unreadable", error=f"{exc.filename}: {exc.strerror}"),
            say("hint_cert_files"),
        )
    except (ValueError, TypeError) as exc:
        return CheckResult(
            "certificate",
            False,
            say("cert_unreadable", error=str(exc).splitlines()[0]),
            say("hint_cert_files"),
        )
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return CheckResult(
            "certificate",
            False,
            say("cert_key_mismatch", key=b.key_file, cert=b.cert_file),
            say("hint_cert_files"),
        )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else "?"
    if cn != cfg.node.id:
        return CheckResult(
            "certificate", False, say("cert_wrong_cn", cn=cn, node=cfg.node.id), say("hint_cert_files")
        )
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # ValueError (names differ), InvalidSignature, TypeError (key type)
        return CheckResult("certificate", False, say("cert_wrong_ca", ca=b.ca_file), say("hint_cert_files"))
    clock_hint = "" if clock_synced else " " + say("hint_clock_first")
    if now < cert.not_valid_before_utc:
        date = local_date(cert.not_valid_before_utc, cfg.node.timezone)
        return CheckResult(
            "certificate", False, say("cert_not_yet", cn=cn, date=date), say("hint_cert_renew") + clock_hint
        )
    days_left = (cert.not_valid_after_utc - now).total_seconds() / 86400
    values = dict(
        cn=cn, days=_shown_days(days_left), date=local_date(cert.not_valid_after_utc, cfg.node.timezone)
    )
    verdict = expiry_verdict(days_left)
    if verdict in ("expired", "expiring"):
        return CheckResult(
            "certificate", False, say(f"cert_{verdict}", **values), say("hint_cert_renew") + clock_hint
        )
    if verdict == "soon":
        return CheckResult("certificate", True, say("cert_soon", **values), say("hint_cert_renew"), warn=True)
    return CheckResult("certificate", True, say("cert_ok", **values))


def check_trust(cfg, say: Say, now: dt.datetime, clock_synced: bool) -> CheckResult:
    from node.errors import RemoteDataError
    from node.trust.trustdoc import load_trust_file

    path = cfg.trust.file
    try:
        document = load_trust_file(path)
    except OSError as exc:
        return CheckResult(
            "trust", False, say("trust_unreadable", path=path, error=exc.strerror), say("hint_trust")
        )
    except RemoteDataError as exc:
        return CheckResult(
            "trust", False, say("trust_unreadable", path=path, error=str(exc)), say("hint_trust")
        )
    days_left = (document.expires - now).total_seconds() / 86400
    values = dict(
        version=document.version,
        days=_shown_days(days_left),
        date=local_date(document.expires, cfg.node.timezone),
    )
    verdict = expiry_verdict(days_left)
    clock_hint = "" if clock_synced else " " + say("hint_clock_first")
    if verdict in ("expired", "expiring"):
        return CheckResult("trust", False, say(f"trust_{verdict}", **values), say("hint_trust") + clock_hint)
    if verdict == "soon":
        return CheckResult("trust", True, say("trust_soon", **values), say("hint_trust"), warn=True)
    return CheckResult("trust", True, say("trust_ok", **values))


def check_clock(cfg, say: Say, now: dt.datetime, synced: bool, daemon_clock: dict | None = None) -> CheckResult:
    """daemon_clock: the running daemon's `clk` status ({ok, src}), which outranks the NTP flag."""
    from zoneinfo import ZoneInfo

    shown = now.astimezone(ZoneInfo(cfg.node.timezone)).strftime("%Y-%m-%d %H:%M")
    if isinstance(daemon_clock, dict):
        if daemon_clock.get("ok"):
            return CheckResult("clock", True, say("clock_ok_daemon", src=daemon_clock.get("src"), now=shown))
        return CheckResult("clock", False, say("clock_bad_daemon", now=shown), say("hint_clock"))
    if synced:
        return CheckResult("clock", True, say("clock_ok", now=shown))
    return CheckResult(
        "clock", False, say("clock_bad", file=cfg.clock.ntp_sync_file, now=shown), say("hint_clock")
    )


# --- broker -----------------------------------------------------------------------------------------


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def try_broker(server: str, ctx: ssl.SSLContext, client_id: str, timeout: float) -> str | None:
    """Connect, wait for CONNACK, disconnect. None when accepted, else why not (short text)."""
    import paho.mqtt.client as mqtt

    from node.adapters.broker import split_server

    host, port = split_server(server)
    answer: dict = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set_context(ctx)
    client.connect_timeout = timeout
    client.on_connect = lambda c, u, flags, reason_code, props: answer.setdefault("rc", reason_code)
    try:
        client.connect(host, port, keepalive=30, clean_start=True)
        deadline = time.monotonic() + timeout
        while "rc" not in answer and time.monotonic() < deadline:
            rc = client.loop(timeout=0.2)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return "closed by the broker during login (certificate not accepted or revoked?)"
        if "rc" not in answer:
            return f"no answer within {timeout:.0f} s"
        if answer["rc"].is_failure:
            return f"refused: {answer['rc']}"
        return None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return _describe_exc(exc)
    finally:
        try:
            client.disconnect()
            client.loop(timeout=0.1)
        except Exception:  # noqa: BLE001 - already gone
            pass


def check_broker(cfg, say: Say, timeout: float = BROKER_TIMEOUT) -> CheckResult:
    from node.adapters.broker import tls_context
    from node.config import broker_problems

    b = cfg.broker
    loopback, unresolved = broker_problems(cfg)
    if loopback or len(unresolved) == len(b.servers):
        # not the 4G link: the address itself cannot work (an IP literal always resolves)
        return CheckResult("broker", False, say("broker_unusable", bad="; ".join(loopback + unresolved)),
                           say("hint_broker_address"))
    try:
        ctx = tls_context(b.ca_file, b.cert_file, b.key_file)
    except (OSError, ValueError) as exc:
        return CheckResult("broker", False, say("broker_bad", bad=_describe_exc(exc)), say("hint_cert_files"))
    accepted, refused = [], []
    for server in b.servers:
        why = try_broker(server, ctx, mqtt_client_id(cfg.node.id, "selftest"), timeout)
        (accepted.append(server) if why is None else refused.append(f"{server} ({why})"))
    if not accepted:
        return CheckResult("broker", False, say("broker_bad", bad="; ".join(refused)), say("hint_broker"))
    if refused:
        return CheckResult(
            "broker",
            True,
            say("broker_ok_partly", ok=", ".join(accepted), bad="; ".join(refused)),
            say("hint_broker"),
            warn=True,
        )
    return CheckResult("broker", True, say("broker_ok", ok=", ".join(accepted)))


# --- libVLC and the service ----------------------------------------------------------------------------

LIBVLC_PROBE = """
import json, sys
try:
    import vlc
    version = vlc.libvlc_get_version().decode()
    instance = vlc.Instance(["--no-video", "--quiet"])
    if instance is None:
        raise RuntimeError("libvlc_new returned NULL (plugins missing?)")
    outputs = sorted({d["name"].decode() for d in (instance.audio_output_enumerate_devices() or [])})
    print(json.dumps({"version": version, "outputs": outputs}))
except BaseException as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


def judge_libvlc(probe: dict, output: str, say: Say) -> CheckResult:
    """Pure: what the probe subprocess printed -> the libvlc line."""
    if "error" in probe:
        return CheckResult("libvlc", False, say("libvlc_bad", error=probe["error"]), say("hint_libvlc"))
    outputs = probe.get("outputs") or []
    shown = ", ".join(outputs) or "-"
    wanted = {"alsa": "alsa", "wav": "afile"}.get(output, output)
    if wanted not in outputs:
        return CheckResult("libvlc", False,
                           say("libvlc_no_output", version=probe.get("version", "?"), output=wanted, outputs=shown),
                           say("hint_libvlc"))
    return CheckResult("libvlc", True, say("libvlc_ok", version=probe.get("version", "?"), outputs=shown))


def check_libvlc(cfg, say: Say, python: str | None = None, timeout: float = 30.0) -> CheckResult:
    """Load libVLC in a child process (a missing or broken libVLC must not take the self-test down)."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([python or sys.executable, "-c", LIBVLC_PROBE], capture_output=True, text=True,
                              timeout=timeout, check=False)
        lines = proc.stdout.strip().splitlines()
        probe = json.loads(lines[-1]) if lines else {"error": f"probe exited {proc.returncode}: "
                                                              f"{proc.stderr.strip()[-200:]}"}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        probe = {"error": f"{type(exc).__name__}: {exc}"}
    return judge_libvlc(probe, cfg.audio.output, say)


def judge_service(props: dict[str, str] | None, say: Say) -> CheckResult:
    """Pure: `systemctl show` properties of speaker-node.service -> the service line."""
    if props is None or props.get("LoadState") == "not-found":
        return CheckResult("service", None, say("service_absent"))
    state = props.get("ActiveState", "?")
    if state == "active" and props.get("SubState") == "running":
        return CheckResult("service", True, say("service_ok"))
    result = ", ".join(f"{k}={props[k]}" for k in ("SubState", "Result", "ExecMainStatus") if props.get(k))
    return CheckResult("service", False, say("service_bad", state=state, result=result), say("hint_service"))


def service_properties(unit: str = "speaker-node.service") -> dict[str, str] | None:
    import subprocess

    try:
        proc = subprocess.run(["systemctl", "show", unit, "--property=LoadState,ActiveState,SubState,Result,"
                               "ExecMainStatus"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no systemd here (a laptop, a container)
    if proc.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


# --- modem ------------------------------------------------------------------------------------------


def _signal_text(status, say: Say) -> str:
    parts = [
        f"{label} {value} {unit}"
        for label, value, unit in (
            ("RSSI", status.rssi_dbm, "dBm"),
            ("RSRP", status.rsrp_dbm, "dBm"),
            ("SINR", status.sinr_db, "dB"),
        )
        if value is not None
    ]
    return ", ".join(parts) or say("no_signal")


def _registration(state: str | None, say: Say) -> str:
    return say(f"reg_{state}") if f"reg_{state}" in MESSAGES else (state or "?")


def judge_modem(status, say: Say) -> CheckResult:
    """Pure: a ModemStatus -> the modem line."""
    signal = _signal_text(status, say)
    if status.sim == "absent":
        return CheckResult("modem", False, say("modem_no_sim"), say("hint_modem_no_sim"))
    if status.sim not in ("ready", None):
        return CheckResult(
            "modem", False, say("modem_sim_locked", sim=status.sim), say("hint_modem_sim_locked")
        )
    if not status.registered:
        return CheckResult(
            "modem",
            False,
            say("modem_not_registered", reg=_registration(status.registration, say), signal=signal),
            say("hint_modem_not_registered"),
        )
    values = dict(
        reg=_registration(status.registration, say),
        op=status.operator or status.mcc_mnc or "?",
        act=(status.access_technology or "?").upper(),
        signal=signal,
    )
    weak = (status.rsrp_dbm is not None and status.rsrp_dbm < WEAK_RSRP_DBM) or (
        status.rsrp_dbm is None and status.rssi_dbm is not None and status.rssi_dbm < WEAK_RSSI_DBM
    )
    if weak:
        return CheckResult("modem", True, say("modem_weak", **values), say("hint_modem_weak"), warn=True)
    return CheckResult("modem", True, say("modem_ok", **values))


def status_from_net(net: dict):
    """The daemon's heartbeat "net" member -> ModemStatus."""
    from node.modem.status import ModemStatus

    return ModemStatus(
        sim=net.get("sim"),
        registration=net.get("reg"),
        operator=net.get("op"),
        mcc_mnc=net.get("mccmnc"),
        access_technology=net.get("act"),
        rssi_dbm=net.get("rssi"),
        rsrp_dbm=net.get("rsrp"),
        sinr_db=net.get("sinr"),
    )


def check_modem(
    cfg, say: Say, *, modem_port=None, daemon: bool = False, service_status: dict | None = None
) -> CheckResult:
    from node.modem.at import ATPort, ModemError
    from node.modem.status import read_status

    if not cfg.modem.enabled:
        return CheckResult("modem", None, say("modem_disabled"))
    if daemon:
        net = (service_status or {}).get("net")
        if not isinstance(net, dict) or not net:
            return CheckResult("modem", None, say("modem_service_no_status"), say("service_hint"))
        result = judge_modem(status_from_net(net), say)
        result.detail = say("from_service", detail=result.detail)
        return result
    port, own_port = modem_port, False
    if port is None:
        if not os.path.exists(cfg.modem.port):
            return CheckResult(
                "modem", False, say("modem_absent", port=cfg.modem.port), say("hint_modem_absent")
            )
        port, own_port = (
            ATPort(cfg.modem.port, cfg.modem.baud, timeout=3.0, open_attempts=2, retry_delay=0.5),
            True,
        )
    try:
        status = read_status(port)
    except ModemError as exc:
        where = getattr(port, "port", cfg.modem.port)
        return CheckResult(
            "modem", False, say("modem_no_answer", port=where, error=exc), say("hint_modem_no_answer")
        )
    finally:
        if own_port:
            port.close()
    return judge_modem(status, say)


# --- inputs -----------------------------------------------------------------------------------------


def judge_input(name: str, active: bool, say: Say) -> CheckResult:
    """Pure. door active = open (bad); mains active = present (good); amp_fault active = fault (bad)."""
    good = active if name == "mains" else not active
    if good:
        return CheckResult(f"input:{name}", True, say(f"{name}_ok"))
    return CheckResult(f"input:{name}", False, say(f"{name}_bad"), say(f"hint_{name}"))


def check_inputs(
    cfg, say: Say, *, pin_factory=None, daemon: bool = False, service_status: dict | None = None
) -> list[CheckResult]:
    from node.errors import DeviceError
    from node.playback.relays import Inputs, InputSpec

    specs = {name: getattr(cfg.inputs, name) for name in INPUT_CHECKS}
    configured = {name: spec for name, spec in specs.items() if spec is not None}
    results: dict[str, CheckResult] = {
        name: CheckResult(f"input:{name}", None, say("input_not_configured"))
        for name in INPUT_CHECKS
        if name not in configured
    }
    if daemon:
        known = (service_status or {}).get("inputs")
        for name in configured:
            value = known.get(name) if isinstance(known, dict) else None
            if isinstance(value, bool):
                result = judge_input(name, value, say)
                result.detail = say("from_service", detail=result.detail)
            else:
                result = CheckResult(
                    f"input:{name}", None, say("input_service_no_status"), say("service_hint")
                )
            results[name] = result
    elif configured:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gpiozero's pin-factory fallback chatter
                inputs = Inputs(
                    {n: InputSpec(s.pin, s.active_high) for n, s in configured.items()},
                    post_event=lambda _event: None,
                    pin_factory=pin_factory,
                    debounce=cfg.inputs.debounce,
                )
        except DeviceError as exc:
            for name, spec in configured.items():
                results[name] = CheckResult(
                    f"input:{name}",
                    False,
                    say("input_open_failed", pin=spec.pin, error=exc),
                    say("hint_relay_open"),
                )
        else:
            try:
                levels = inputs.read()
            finally:
                inputs.close()
            for name in configured:
                results[name] = judge_input(name, levels[name], say)
    return [results[name] for name in INPUT_CHECKS]


# --- disk -------------------------------------------------------------------------------------------


def check_disk(cfg, say: Say) -> CheckResult:
    path = Path(cfg.storage.state_dir).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free_mb = shutil.disk_usage(path).free // (1024 * 1024)
    except OSError as exc:
        return CheckResult(
            "disk", False, say("disk_unreadable", path=path, error=exc.strerror), say("hint_disk")
        )
    if free_mb < MIN_FREE_MB:
        return CheckResult(
            "disk", False, say("disk_low", free=free_mb, path=path, need=MIN_FREE_MB), say("hint_disk")
        )
    return CheckResult("disk", True, say("disk_ok", free=free_mb, path=path))
