"""Readings from the Linux host: temperature, throttling, load, memory, disk, uptime, clock, certificate.

Every reader takes `root` (default "/") so tests can point it at a fake sysfs/procfs tree, and returns
None when its source is missing or unreadable: a heartbeat with a hole is better than no heartbeat, so
nothing here raises.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

# Raspberry Pi firmware `get_throttled` bits. Low bits are "now", bits 16+ are "since boot".
THROTTLE_BITS: dict[int, str] = {
    0: "undervoltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "undervoltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}

THROTTLED_SYSFS = "sys/devices/platform/soc/soc:firmware/get_throttled"
THERMAL_ZONE = "sys/class/thermal/thermal_zone0/temp"


def _read_text(root: str | os.PathLike, relative: str) -> str | None:
    try:
        return (Path(root) / relative).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def cpu_temp_c(root: str | os.PathLike = "/") -> float | None:
    """SoC temperature in °C (sysfs gives millidegrees)."""
    text = _read_text(root, THERMAL_ZONE)
    try:
        return round(int(text) / 1000.0, 1) if text else None
    except ValueError:
        return None


def parse_throttled(text: str | None) -> int | None:
    """Accepts `throttled=0x50005` (vcgencmd), `0x50005` or `50005` (sysfs prints bare hex)."""
    if not text:
        return None
    value = text.strip().rpartition("=")[2].strip()
    try:
        return int(value, 16)
    except ValueError:
        return None


def decode_throttled(bits: int | None) -> list[str]:
    """Names of the set bits, in bit order; unknown bits are ignored."""
    if bits is None:
        return []
    return [name for bit, name in sorted(THROTTLE_BITS.items()) if bits & (1 << bit)]


def _run_vcgencmd() -> str | None:
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        done = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def throttled_bits(root: str | os.PathLike = "/", run_vcgencmd=_run_vcgencmd) -> int | None:
    """The sysfs file first (no subprocess); `vcgencmd` only on the real root, where it exists."""
    bits = parse_throttled(_read_text(root, THROTTLED_SYSFS))
    if bits is None and str(root) == "/" and run_vcgencmd is not None:
        bits = parse_throttled(run_vcgencmd())
    return bits


def load_1m(root: str | os.PathLike = "/") -> float | None:
    text = _read_text(root, "proc/loadavg")
    if text:
        try:
            return round(float(text.split()[0]), 2)
        except (ValueError, IndexError):
            return None
    if str(root) == "/":
        try:
            return round(os.getloadavg()[0], 2)
        except OSError:
            return None
    return None


def memory_available_pct(root: str | os.PathLike = "/") -> int | None:
    """MemAvailable / MemTotal in percent (MemAvailable counts reclaimable cache, MemFree does not)."""
    text = _read_text(root, "proc/meminfo")
    if not text:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    total, available = fields.get("MemTotal"), fields.get("MemAvailable")
    if not total or available is None:
        return None
    return round(100 * available / total)


def disk_free_mb(path: str | os.PathLike) -> int | None:
    """Space an unprivileged writer can still use (f_bavail, not f_bfree: root's reserve is not ours)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))


def uptime_s(root: str | os.PathLike = "/") -> int | None:
    text = _read_text(root, "proc/uptime")
    try:
        return int(float(text.split()[0])) if text else None
    except (ValueError, IndexError):
        return None


def cert_days_left(path: str | os.PathLike | None, now: dt.datetime | None = None) -> int | None:
    """Whole days until the PEM certificate at `path` expires (negative once expired)."""
    if not path:
        return None
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError, ImportError):
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    return int((cert.not_valid_after_utc - now).total_seconds() // 86400)


def read_system(
    root: str | os.PathLike = "/",
    *,
    data_path: str | os.PathLike = "/var/lib/speaker-node",
    cert_path: str | os.PathLike | None = None,
    now: dt.datetime | None = None,
    run_vcgencmd=_run_vcgencmd,
) -> dict:
    """All host readings, keyed as node.reporting.heartbeat.build_snapshot expects them.

    No clock reading here: whether the clock is trusted is the node's decision (node.trust.time_trust,
    fed by the configured clock adapter), never the host's NTP flag file (a simulated node, the demo and
    the tests must not depend on the machine they run on).
    """
    bits = throttled_bits(root, run_vcgencmd)
    return {
        "temp": cpu_temp_c(root),
        "throttled": bits,
        "thr": decode_throttled(bits),
        "load": load_1m(root),
        "mem": memory_available_pct(root),
        "disk": disk_free_mb(data_path),
        "up": uptime_s(root),
        "cert_d": cert_days_left(cert_path, now),
    }
