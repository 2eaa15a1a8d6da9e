"""A modem on a pty: answers AT commands like a Quectel EC25 or a SIMCom SIM7600, for tests, the demo,
technicians' laptops and the daemon's --simulate mode.

The simulator owns the pty master; clients open `.port`, a stable symlink to the slave (like the udev
name /dev/ttyModemAT). Faults are knobs: signal, registration, SIM absent, URCs (also in the middle of
a reply), garbage bytes, hanging, +CME errors per command, and the USB port vanishing and coming back
(AT+CFUN=1,1 does that by itself, like the real modem re-enumerating on USB).

All pty IO happens on one worker thread; the knobs post work to it, so a closing fd is never in use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import select
import shutil
import tempfile
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from node.modem.at import CME_TEXT_CODES

CME_TEXTS = {code: text for text, code in CME_TEXT_CODES.items()}
CME_TEXTS.update({10: "SIM not inserted", 11: "SIM PIN required", 12: "SIM PUK required", 13: "SIM failure"})


@dataclass
class Profile:
    vendor: str
    model: str
    revision: str
    ati: list[str]
    boot_urcs: list[str]


PROFILES = {
    "ec25": Profile(
        "Quectel",
        "EC25",
        "EC25EFAR06A06M4G",
        ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"],
        ["RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"],
    ),
    "sim7600": Profile(
        "SIMCOM INCORPORATED",
        "SIMCOM_SIM7600E-H",
        "SIM7600M22_V2.0",
        [
            "Manufacturer: SIMCOM INCORPORATED",
            "Model: SIMCOM_SIM7600E-H",
            "Revision: SIM7600M22_V2.0",
            "IMEI: {imei}",
            "+GCAP: +CGSM",
        ],
        ["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"],
    ),
}


class _Cme(Exception):
    def __init__(self, code: int | None):
        self.code = code


@dataclass
class Transcript:
    """A vendor-manual style dialogue: '> AT+CSQ' then '< +CSQ: 23,99' ... '< OK'."""

    replies: dict[str, list[list[str]]] = field(default_factory=dict)
    expect: dict = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Transcript:
        transcript, current = cls(), None
        for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            line = raw.rstrip()
            if line.startswith("# expect:"):
                transcript.expect.update(json.loads(line[len("# expect:") :]))
            elif not line.strip() or line.startswith("#"):
                continue
            elif line.startswith(">"):
                command = line[1:].strip()
                current = []
                transcript.replies.setdefault(command.upper(), []).append(current)
                transcript.order.append(command)
            elif line.startswith("<") and current is not None:
                if line[1:].strip():
                    current.append(line[1:].strip())
            else:
                raise ValueError(f"{path}:{number}: lines start with '>', '<' or '#'")
        return transcript


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


class ModemSimulator:
    """See the module docstring. `port` is the path clients open."""

    def __init__(
        self,
        profile: str = "ec25",
        *,
        echo: bool = True,
        link: str | Path | None = None,
        transcript: str | Path | Transcript | None = None,
        strict: bool = False,
        reset_downtime: float = 0.3,
        search_time: float = 0.3,
    ):
        if profile not in PROFILES:
            raise ValueError(f"unknown modem profile {profile!r}; known: {', '.join(PROFILES)}")
        self.profile_name = profile
        self.profile = PROFILES[profile]
        self.initial_echo = echo
        self.echo = echo
        if isinstance(transcript, (str, Path)):
            transcript = Transcript.load(transcript)
        self.transcript = transcript
        self._transcript_cursor: dict[str, int] = {}
        self.strict = strict
        self.reset_downtime = reset_downtime
        self.search_time = search_time
        # radio and SIM state
        self.sim = "ready"
        self.csq = 23
        self.rsrp_dbm, self.rsrq_db, self.sinr_db = -95, -10, 15
        self.stat = 1
        self.mcc_mnc = "45204"
        self.long_name = "Viettel"
        self.act = 7
        self.tz_quarters = 28
        self.network_time_known = True
        self.imei = "86769804123456" + _luhn_digit("86769804123456")
        self.iccid = "8984048000012345678"
        self.cmee = 0
        self.cops_format = 0
        # fault knobs
        self._cme_overrides: dict[str, int | None] = {}
        self._mid_reply: list[bytes] = []
        self._hang_until = 0.0
        self._delay_next = 0.0
        self._busy_until = 0.0
        # records
        self.commands: list[tuple[float, str]] = []
        self.resets = 0
        # plumbing
        self._own_dir = None
        if link is None:
            self._own_dir = tempfile.mkdtemp(prefix="modem-sim-")
            link = Path(self._own_dir) / "ttyModemAT"
        self.port = str(link)
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_path: str | None = None
        self._inbuf = bytearray()
        self._jobs: queue.Queue = queue.Queue()
        self._timers: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._open_pty(announce=False)
        self._thread = threading.Thread(target=self._run, name=f"modem-sim-{profile}", daemon=True)
        self._thread.start()

    # --- lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> ModemSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    # --- knobs (all thread-safe: they post to the worker) -----------------------------------------------

    def set_signal(self, csq: int, *, rsrp_dbm=None, rsrq_db=None, sinr_db=None) -> None:
        def job():
            self.csq = csq
            if csq == 99:
                self.rsrp_dbm = self.rsrq_db = self.sinr_db = None
            for name, value in (("rsrp_dbm", rsrp_dbm), ("rsrq_db", rsrq_db), ("sinr_db", sinr_db)):
                if value is not None:
                    setattr(self, name, value)

        self._call(job)

    def set_registration(self, stat: int) -> None:
        self._call(lambda: setattr(self, "stat", stat))

    def set_sim(self, state: str) -> None:
        """'ready', 'absent', 'pin_required' or 'puk_required'."""
        self._call(lambda: setattr(self, "sim", state))

    def cme_error_for(self, command: str, code: int | None) -> None:
        """Answer this command with +CME ERROR: code (or a bare ERROR when code is None)."""
        self._call(lambda: self._cme_overrides.__setitem__(command.strip().upper(), code))

    def inject_urc(self, line: str, *, mid_reply: bool = False) -> None:
        """Send an unsolicited line now, or inside the next reply (after its info lines, before OK)."""
        self.inject_bytes(b"\r\n" + line.encode() + b"\r\n", mid_reply=mid_reply)

    def inject_garbage(self, data: bytes = b"\x00\xff\xfe\x00\x9c", *, mid_reply: bool = False) -> None:
        self.inject_bytes(data, mid_reply=mid_reply)

    def inject_bytes(self, data: bytes, *, mid_reply: bool = False) -> None:
        if mid_reply:
            self._call(lambda: self._mid_reply.append(data))
        else:
            self._call(lambda: self._send(data))

    def hang(self, seconds: float) -> None:
        """Swallow every command for this long: the driver sees a timeout."""
        self._call(lambda: setattr(self, "_hang_until", time.monotonic() + seconds))

    def delay_next_reply(self, seconds: float) -> None:
        """Answer the next command only after this long (a reply that arrives after the driver gave up)."""
        self._call(lambda: setattr(self, "_delay_next", seconds))

    def vanish(self) -> None:
        """Close the pty and remove the symlink, as when USB re-enumerates."""
        self._call(self._close_pty)

    def reappear(self) -> None:
        """A new pty behind the same symlink, with the boot URCs waiting in it."""
        self._call(lambda: self._open_pty(announce=True))

    def count(self, command: str) -> int:
        return sum(1 for _, c in self.commands if c.upper() == command.upper())

    # --- worker --------------------------------------------------------------------------------------

    def _call(self, job, wait: bool = True) -> None:
        if threading.current_thread() is self._thread:
            job()
            return
        done = threading.Event()

        def wrapped():
            try:
                job()
            finally:
                done.set()

        self._jobs.put(wrapped)
        os.write(self._wake_w, b"x")
        if wait and not done.wait(5):
            raise RuntimeError("modem simulator worker did not respond")

    def _later(self, delay: float, job) -> None:
        self._timers.append((time.monotonic() + delay, job))

    def _run(self) -> None:
        while not self._stop.is_set():
            while not self._jobs.empty():
                self._jobs.get_nowait()()
            now = time.monotonic()
            due = [t for t in self._timers if t[0] <= now]
            self._timers = [t for t in self._timers if t[0] > now]
            for _, job in sorted(due, key=lambda t: t[0]):
                job()
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            timeout = 0.05 if self._timers else 0.5
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 1024)
            if self._master is not None and self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    data = b""
                self._inbuf += data
                self._handle_input()

    def _open_pty(self, announce: bool) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        Path(self.port).parent.mkdir(parents=True, exist_ok=True)
        temp = f"{self.port}.new"
        if os.path.lexists(temp):
            os.unlink(temp)
        os.symlink(self.slave_path, temp)
        os.replace(temp, self.port)
        if announce:
            for urc in self.profile.boot_urcs:
                if urc == "+CPIN: READY" and self.sim != "ready":
                    urc = "+CPIN: NOT INSERTED" if self.sim == "absent" else "+CPIN: SIM PIN"
                self._send(b"\r\n" + urc.encode() + b"\r\n")

    def _close_pty(self) -> None:
        for name in ("_master", "_slave"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self._inbuf.clear()
        if os.path.islink(self.port):
            os.unlink(self.port)

    def _send(self, data: bytes) -> None:
        if self._master is None:
            return
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def _handle_input(self) -> None:
        while True:
            cut = min((i for i in (self._inbuf.find(b"\r"), self._inbuf.find(b"\n")) if i >= 0), default=-1)
            if cut < 0:
                if len(self._inbuf) > 4096:
                    self._inbuf.clear()
                return
            raw = bytes(self._inbuf[:cut])
            del self._inbuf[: cut + 1]
            command = raw.decode("ascii", errors="replace").strip()
            if not command:
                continue
            if time.monotonic() < self._hang_until:
                continue
            self.commands.append((time.time(), command))
            if self.echo:
                self._send(raw + b"\r")
            # A modem works through commands in order: one that arrives while a slow reply is pending
            # is answered after it.
            now = time.monotonic()
            if self._delay_next > 0 or now < self._busy_until:
                self._busy_until = max(now, self._busy_until) + self._delay_next + 0.001
                self._delay_next = 0.0
                self._later(self._busy_until - now, lambda c=command: self._answer(c))
            else:
                self._answer(command)

    def _answer(self, command: str) -> None:
        key = command.upper()
        try:
            if key in self._cme_overrides:
                raise _Cme(self._cme_overrides[key])
            reply = self._reply(key)
        except _Cme as err:
            if err.code is None or self.cmee == 0:
                reply = ["ERROR"]
            elif self.cmee == 2:
                reply = [f"+CME ERROR: {CME_TEXTS.get(err.code, 'unknown')}"]
            else:
                reply = [f"+CME ERROR: {err.code}"]
        self._send_reply(reply)

    def _send_reply(self, lines: list[str]) -> None:
        """Frame information lines and the final result as a modem does (ATV1): CR LF around each block;
        injected mid-reply bytes go between the last information line and the final result."""
        info, final = lines[:-1], lines[-1] if lines else "OK"
        out = b""
        if info:
            out += b"\r\n" + b"\r\n".join(line.encode() for line in info) + b"\r\n"
        out += b"".join(self._mid_reply)
        self._mid_reply.clear()
        self._send(out + b"\r\n" + final.encode() + b"\r\n")

    # --- the modem itself ------------------------------------------------------------------------------

    def _reply(self, key: str) -> list[str]:
        """The whole reply, final result last."""
        basic = self._basic(key)
        if basic is not None:
            return basic + ["OK"]
        if self.transcript is not None and key in self.transcript.replies:
            answers = self.transcript.replies[key]
            index = self._transcript_cursor.get(key, 0)
            self._transcript_cursor[key] = index + 1
            return answers[min(index, len(answers) - 1)]
        if self.strict:
            raise _Cme(None)
        name = _method_name(key)
        handler = getattr(self, f"_{self.profile_name}_{name}", None) or getattr(self, f"_any_{name}", None)
        if handler is None:
            raise _Cme(None)
        return handler(key) + ["OK"]

    def _basic(self, key: str) -> list[str] | None:
        if key == "AT":
            return []
        if key in ("ATE0", "ATE1"):
            self.echo = key == "ATE1"
            return []
        if key.startswith("AT+CMEE="):
            value = key.split("=", 1)[1]
            if value not in ("0", "1", "2"):
                raise _Cme(None)
            self.cmee = int(value)
            return []
        if key == "AT+CFUN=1,1":
            self.resets += 1
            self._later(0.05, self._begin_reset)
            return []
        return None

    def _begin_reset(self) -> None:
        self._close_pty()
        stat, self.stat = self.stat, 2
        self.echo, self.cmee = self.initial_echo, 0

        def back_up():
            self._open_pty(announce=True)
            self._later(self.search_time, lambda: setattr(self, "stat", stat if stat != 2 else 1))

        self._later(self.reset_downtime, back_up)

    @property
    def registered(self) -> bool:
        return self.sim == "ready" and self.stat in (1, 5)

    def _require_sim(self) -> None:
        if self.sim == "absent":
            raise _Cme(10)
        if self.sim == "pin_required":
            raise _Cme(11)
        if self.sim == "puk_required":
            raise _Cme(12)

    # handlers shared by both profiles; names come from _method_name()
    def _any_ATI(self, key):
        return [line.format(imei=self.imei) for line in self.profile.ati]

    def _any_AT_CGMI(self, key):
        return [self.profile.vendor]

    def _any_AT_CGMM(self, key):
        return [self.profile.model]

    def _any_AT_CGMR(self, key):
        return [self.profile.revision]

    def _any_AT_CGSN(self, key):
        return [self.imei]

    def _any_AT_CPIN_Q(self, key):
        self._require_sim()
        return ["+CPIN: READY"]

    def _any_AT_CSQ(self, key):
        return [f"+CSQ: {self.csq},99"]

    def _any_AT_CESQ(self, key):
        if not self.registered or self.rsrp_dbm is None:
            return ["+CESQ: 99,99,255,255,255,255"]
        rsrp = max(0, min(97, int(self.rsrp_dbm) + 141))
        rsrq = max(0, min(34, int((self.rsrq_db + 20) * 2)))
        return [f"+CESQ: 99,99,255,255,{rsrq},{rsrp}"]

    def _registration(self, name):
        stat = self.stat if self.sim == "ready" else 0
        return [f"+{name}: 0,{stat}"]

    def _any_AT_CREG_Q(self, key):
        return self._registration("CREG")

    def _any_AT_CGREG_Q(self, key):
        return self._registration("CGREG")

    def _any_AT_CEREG_Q(self, key):
        return self._registration("CEREG")

    def _any_AT_COPS_Q(self, key):
        if not self.registered:
            return ["+COPS: 0"]
        oper = self.mcc_mnc if self.cops_format == 2 else self.long_name
        return [f'+COPS: 0,{self.cops_format},"{oper}",{self.act}']

    def _any_AT_COPS_3_0(self, key):
        self.cops_format = 0
        return []

    def _any_AT_COPS_3_2(self, key):
        self.cops_format = 2
        return []

    def _any_AT_CFUN_Q(self, key):
        return ["+CFUN: 1"]

    def _any_AT_CTZU_Q(self, key):
        return ["+CTZU: 1"]

    def _clock(self, *, utc: bool, four_digit_year: bool = False) -> str:
        zone = dt.timezone(dt.timedelta(minutes=15 * self.tz_quarters))
        now = dt.datetime.now(dt.timezone.utc)
        shown = now if utc else now.astimezone(zone)
        pattern = "%Y/%m/%d,%H:%M:%S" if four_digit_year else "%y/%m/%d,%H:%M:%S"
        return shown.strftime(pattern) + f"{self.tz_quarters:+03d}"

    def _any_AT_CCLK_Q(self, key):
        return [f'+CCLK: "{self._clock(utc=False)}"']

    # Quectel EC25
    def _ec25_AT_QCCID(self, key):
        self._require_sim()
        return [f"+QCCID: {self.iccid}F"]

    def _ec25_AT_QENG__SERVINGCELL_(self, key):
        if not self.registered:
            return ['+QENG: "servingcell","SEARCH"']
        mcc, mnc = self.mcc_mnc[:3], self.mcc_mnc[3:]
        rssi = -113 + 2 * self.csq if self.csq != 99 else "-"
        return [
            f'+QENG: "servingcell","NOCONN","LTE","FDD",{mcc},{mnc},1A2B3C4,123,1650,3,5,5,2F1A,'
            f"{_dash(self.rsrp_dbm)},{_dash(self.rsrq_db)},{rssi},{_dash(self.sinr_db)},12,-,-50"
        ]

    def _ec25_AT_QCSQ(self, key):
        if not self.registered:
            return ['+QCSQ: "NOSERVICE"']
        return [
            f'+QCSQ: "LTE",{-113 + 2 * self.csq},{self.rsrp_dbm},{(self.sinr_db + 20) * 5},{self.rsrq_db}'
        ]

    def _ec25_AT_QLTS_2(self, key):
        if not (self.registered and self.network_time_known):
            return ['+QLTS: ""']
        return [f'+QLTS: "{self._clock(utc=False, four_digit_year=True)},0"']

    # SIMCom SIM7600
    def _sim7600_AT_CICCID(self, key):
        self._require_sim()
        return [f"+ICCID: {self.iccid}"]

    def _sim7600_AT_CPSI_Q(self, key):
        if not self.registered:
            return ["+CPSI: NO SERVICE,Online"]
        plmn = f"{self.mcc_mnc[:3]}-{self.mcc_mnc[3:]}"
        rssi = -113 + 2 * self.csq if self.csq != 99 else -1130
        return [
            f"+CPSI: LTE,Online,{plmn},0x2F1A,27409348,123,EUTRAN-BAND3,1650,5,5,"
            f"{_dash(self.rsrq_db, 10)},{_dash(self.rsrp_dbm, 10)},{rssi * 10},{self.sinr_db or 0}"
        ]


def _method_name(key: str) -> str:
    """'AT+CPIN?' -> 'AT_CPIN_Q', 'AT+QENG="SERVINGCELL"' -> 'AT_QENG__SERVINGCELL_', 'AT+COPS=3,2' -> ..."""
    return "".join(ch if ch.isalnum() else "_Q" if ch == "?" else "_" for ch in key)


def _dash(value, scale: int = 1) -> str:
    """Vendor engineering commands print '-' for a value they do not know."""
    return "-" if value is None else str(int(value * scale))
