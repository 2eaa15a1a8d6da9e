"""AT dialogue with the modem's AT port over pyserial (a USB serial port, or a pty from the simulator).

One command at a time: write "AT...\r", read lines until a final result code (OK / ERROR / +CME ERROR /
+CMS ERROR), return the information lines. Everything else that arrives is sorted out here:

- echo of the command line (echo is switched off at open with ATE0, but a reset modem comes back with
  echo on until we reopen, and some firmwares ignore ATE0 on secondary ports);
- unsolicited result codes (URCs) interleaved anywhere, even between a reply's lines and its OK; they
  are kept in `urcs` with a timestamp;
- garbage bytes (NULs, non-UTF-8 noise after a USB hiccup) and blank lines.

URC versus reply. A line belongs to the reply only if it arrives before the final result and carries
the command's own prefix ("+CSQ:" for AT+CSQ). That rule alone cannot separate an unsolicited
"+CREG: 1" from the reply to AT+CREG?; the reply always starts with <n> ("+CREG: 0,1") and a URC never
does, so registration replies are also checked for shape (parse.parse_creg). Where even the shape is
the same ("+CPIN: READY" at boot during AT+CPIN?) the two carry the same fact, so the confusion is
harmless. A reply line that arrives *after* a timeout is stale; the next command first waits for the
port to fall quiet and drops such lines rather than taking them as its own.

Not thread-safe by design beyond a lock: the daemon polls the modem from one worker.
"""

from __future__ import annotations

import collections
import re
import termios
import threading
import time
from dataclasses import dataclass

import serial

from node.errors import DeviceError
from node.modem import parse

# What a serial port raises when the modem disappears under it (USB re-enumeration after AT+CFUN=1,1, a
# brown-out). pyserial lets termios.error through from open() (tcgetattr) and flush() (tcdrain), and
# termios.error is not an OSError: it escaped as EIO from a reset under load instead of ModemGone.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)

MAX_LINE_CHARS = 4096  # a longer line is noise or a runaway; it is dropped
MAX_REPLY_LINES = 256
MAX_COMMAND_CHARS = 512
MAX_URCS_KEPT = 200

# Lines that a modem sends on its own. A line with the command's own prefix is still taken as reply.
URC_PREFIXES = (
    "RDY",
    "+CPIN:",
    "+QIND:",
    "^SYSSTART",
    "+CGEV:",
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+C5GREG:",
    "+QUSIM:",
    "+CFUN:",
    "SMS DONE",
    "PB DONE",
    "+CMTI:",
    "+CMT:",
    "+CDS:",
    "+CBM:",
    "RING",
    "+CRING:",
    "NO CARRIER",
    "+CLIP:",
    "+QNITZ:",
    "+CTZV:",
    "+CTZE:",
    "*PSUTTZ:",
    "DST:",
    "+CUSD:",
    "+QSTAT:",
    "+QIURC:",
    "+CPSI:",
    "+CSQN:",
    "+QCSQ:",
    "+QSIMSTAT:",
    "+SIMCARD:",
    "+STIN:",
    "+CNSMOD:",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
    "+QGPSURC:",
    "+CGNSINF:",
    "+PACSP",
    "+QNETDEVSTATUS:",
)

# Replies whose prefix is not the command's name.
REPLY_PREFIX_OVERRIDES = {"+CICCID:": "+ICCID:", "+GSN:": "+CGSN:"}

CME_TEXT_CODES = {
    "phone failure": 0,
    "operation not allowed": 3,
    "operation not supported": 4,
    "sim not inserted": 10,
    "sim pin required": 11,
    "sim puk required": 12,
    "sim failure": 13,
    "sim busy": 14,
    "sim wrong": 15,
    "incorrect password": 16,
    "no network service": 30,
    "network timeout": 31,
    "unknown": 100,
}


class ModemError(DeviceError):
    """Anything that went wrong talking to the modem."""


class ModemCommandError(ModemError):
    """The modem answered ERROR, +CME ERROR: n or +CMS ERROR: n. `cme_code` is None for a bare ERROR."""

    def __init__(self, command: str, cme_code: int | None, text: str):
        self.command = command
        self.cme_code = cme_code
        self.text = text
        super().__init__(f"{command}: {text}")


class ModemTimeout(ModemError):
    """No final result code arrived in time."""


class ModemGone(ModemError):
    """The port vanished (USB re-enumeration, cable, modem reset) or cannot be opened."""


@dataclass(frozen=True)
class Urc:
    line: str
    at: float  # time.time() when it was read


def clean_line(raw: bytes) -> str:
    """Bytes of one line -> text. Noise (NULs, invalid UTF-8, control bytes) comes *before* real output
    after a USB hiccup, glued to it ("\\xff\\xfeOK"), so keep only what follows the last noise byte."""
    text = raw.decode("utf-8", errors="replace")
    cut = max((i for i, ch in enumerate(text) if ch == "\ufffd" or not ch.isprintable()), default=-1)
    return text[cut + 1 :].strip()


def expected_prefix(command: str) -> str | None:
    """'AT+CSQ' -> '+CSQ:', 'AT+CREG?' -> '+CREG:', 'AT+QENG="servingcell"' -> '+QENG:', 'ATI' -> None."""
    match = re.match(r"^AT([+^$*%][A-Za-z0-9]+)", command.strip(), re.IGNORECASE)
    if not match:
        return None
    prefix = match.group(1).upper() + ":"
    return REPLY_PREFIX_OVERRIDES.get(prefix, prefix)


def is_urc(line: str) -> bool:
    upper = line.upper()
    return any(upper.startswith(p) for p in URC_PREFIXES)


def _expects_info(command: str) -> bool:
    """Whether a successful answer always carries information lines (queries and reads)."""
    upper = command.strip().upper()
    if upper in ("ATI", "ATI0") or upper.endswith("?"):
        return True
    if upper.startswith(("AT+QENG=", "AT+QLTS")):
        return True
    return expected_prefix(upper) is not None and "=" not in upper


def _final(line: str) -> tuple[bool, int | None, str] | None:
    """None if not a final result; else (ok, cme_code, text)."""
    upper = line.upper()
    if upper == "OK":
        return True, None, "OK"
    if upper == "ERROR":
        return False, None, "ERROR"
    match = re.match(r"^\+(CME|CMS) ERROR:\s*(.*)$", line, re.IGNORECASE)
    if match:
        detail = match.group(2).strip()
        code = int(detail) if detail.isdigit() else CME_TEXT_CODES.get(detail.lower())
        return False, code, line
    return None


def _registration_urc_shape(prefix: str, command: str, line: str) -> bool:
    """True when a +CREG/+CGREG/+CEREG line during a registration query is a URC, not the reply."""
    if prefix not in ("+CREG:", "+CGREG:", "+CEREG:", "+C5GREG:") or not command.strip().endswith("?"):
        return False
    try:
        return parse.parse_creg(line, prefix).unsolicited
    except Exception:
        return True


class ATPort:
    """The AT port. Opens lazily; after ModemGone the next call reopens (bounded retries)."""

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        *,
        timeout: float = 2.0,
        open_attempts: int = 3,
        retry_delay: float = 0.5,
        sleep=time.sleep,
        serial_factory=serial.Serial,
    ):
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.open_attempts = max(1, open_attempts)
        self.retry_delay = retry_delay
        self._sleep = sleep
        self._serial_factory = serial_factory
        self._serial = None
        self._buffer = bytearray()
        self._stale_possible = False
        self._lock = threading.Lock()
        self.urcs: collections.deque[Urc] = collections.deque(maxlen=MAX_URCS_KEPT)
        self.opens = 0  # how many times the port was (re)opened: a re-enumeration shows up here
        self.stale_lines_dropped = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> ATPort:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        with self._lock:
            self._ensure_open()

    def close(self) -> None:
        with self._lock:
            self._drop_port()

    def take_urcs(self) -> list[Urc]:
        """URCs seen so far (oldest first), forgetting them."""
        with self._lock:
            if self._serial is not None:
                try:
                    self._drain_pending(quiet_for=0.0)
                except ModemGone:
                    pass
            taken = list(self.urcs)
            self.urcs.clear()
            return taken

    # --- the dialogue ----------------------------------------------------------------------------------

    def command(self, cmd: str, timeout: float | None = None, *, expect: str | None = None) -> list[str]:
        """Send one AT command; return its information lines when the modem answers OK.

        Raises ModemCommandError on ERROR/+CME ERROR/+CMS ERROR, ModemTimeout without a final result,
        ModemGone when the port disappears (the next call reopens it).
        """
        cmd = cmd.strip()
        if (
            not cmd.upper().startswith("AT")
            or len(cmd) > MAX_COMMAND_CHARS
            or any(c in cmd for c in "\r\n\x1a")
        ):
            raise ValueError(f"not a single AT command: {cmd[:40]!r}")
        with self._lock:
            self._ensure_open()
            return self._exchange(cmd, self.timeout if timeout is None else timeout, expect)

    def _exchange(self, cmd: str, timeout: float, expect: str | None) -> list[str]:
        # After a timeout the late reply may still be on its way: wait for quiet, and if a bare OK still
        # turns up before any line of a query's answer, it belongs to the old command.
        owed_final = self._stale_possible
        self._drain_pending(quiet_for=0.2 if owed_final else 0.0)
        self._stale_possible = False
        self._write(cmd.encode("ascii", errors="replace") + b"\r")
        prefix = expect or expected_prefix(cmd)
        info: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_line(deadline)
            if line is None:
                self._stale_possible = True
                raise ModemTimeout(f"{cmd}: no answer within {timeout:g} s on {self.port}")
            if not line:
                continue
            if not info and line.replace(" ", "").upper() == cmd.replace(" ", "").upper():
                continue  # echo
            final = _final(line)
            if final is not None:
                ok, code, text = final
                if owed_final and ok and not info and _expects_info(cmd):
                    owed_final = False
                    self.stale_lines_dropped += 1
                    continue
                if ok:
                    return info
                raise ModemCommandError(cmd, code, text)
            if self._belongs_to_reply(cmd, prefix, line):
                if len(info) < MAX_REPLY_LINES:
                    info.append(line)
            elif owed_final and not is_urc(line):
                self.stale_lines_dropped += 1
            else:
                self.urcs.append(Urc(line, time.time()))

    @staticmethod
    def _belongs_to_reply(cmd: str, prefix: str | None, line: str) -> bool:
        upper = line.upper()
        if prefix and upper.startswith(prefix):
            return not _registration_urc_shape(prefix, cmd, line)
        if is_urc(line):
            return False
        if prefix and upper[:1] in "+^*$":
            return False  # another command's prefix: nobody asked for it now
        return True

    # --- serial plumbing -------------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._serial is not None:
            return
        last: Exception | None = None
        for attempt in range(self.open_attempts):
            if attempt:
                self._sleep(self.retry_delay)
            try:
                self._serial = self._serial_factory(self.port, self.baud, timeout=0.05, write_timeout=2.0)
            except (*PORT_ERRORS, ValueError) as exc:
                last = exc
                continue
            self._buffer.clear()
            self.opens += 1
            try:
                self._handshake()
                return
            except ModemGone as exc:
                last = exc
        raise ModemGone(f"cannot open modem port {self.port}: {last}")

    def _handshake(self) -> None:
        """Find the modem's attention, then ask for no echo and numeric +CME errors."""
        for _ in range(3):
            try:
                self._exchange("AT", min(1.0, self.timeout), None)
                break
            except ModemTimeout:
                continue
            except ModemCommandError:
                break  # it answered: a modem is there
        else:
            self._drop_port()
            raise ModemTimeout(f"no modem answered AT on {self.port}")
        for setup in ("ATE0", "AT+CMEE=1"):
            try:
                self._exchange(setup, self.timeout, None)
            except ModemCommandError:
                pass  # a port that refuses these still answers queries

    def _drop_port(self) -> None:
        port, self._serial = self._serial, None
        self._buffer.clear()
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def _gone(self, exc: BaseException) -> ModemGone:
        self._drop_port()
        return ModemGone(f"modem port {self.port} went away: {exc}")

    def _write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
            self._serial.flush()
        except serial.SerialTimeoutException as exc:
            raise ModemTimeout(f"write to {self.port} timed out") from exc
        except PORT_ERRORS as exc:
            raise self._gone(exc) from exc

    def _read_some(self) -> bytes:
        try:
            return self._serial.read(max(1, min(self._waiting(), 4096)))
        except PORT_ERRORS as exc:
            raise self._gone(exc) from exc

    def _waiting(self) -> int:
        try:
            return self._serial.in_waiting
        except PORT_ERRORS as exc:
            raise self._gone(exc) from exc

    def _pop_line(self) -> str | None:
        """Next complete line from the buffer ('' for a blank one), or None if no terminator yet."""
        match = re.search(rb"[\r\n]", self._buffer)
        if match is None:
            if len(self._buffer) > MAX_LINE_CHARS:
                self._buffer.clear()
            return None
        raw = bytes(self._buffer[: match.start()])
        del self._buffer[: match.end()]
        if len(raw) > MAX_LINE_CHARS:
            return ""
        return clean_line(raw)

    def _read_line(self, deadline: float) -> str | None:
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if time.monotonic() >= deadline:
                return None
            self._buffer += self._read_some()

    def _drain_pending(self, quiet_for: float) -> None:
        """Read what is already waiting (and, after a timeout, until the port is quiet): URCs are kept,
        anything else is a stale reply and dropped."""
        quiet_deadline = time.monotonic() + quiet_for
        hard_deadline = time.monotonic() + max(quiet_for * 5, 0.0)
        while True:
            if self._waiting():
                self._buffer += self._read_some()
                quiet_deadline = time.monotonic() + quiet_for
            elif time.monotonic() >= quiet_deadline or time.monotonic() >= hard_deadline:
                break
            else:
                time.sleep(0.02)
        self._drain_buffer_lines()

    def _drain_buffer_lines(self) -> None:
        while True:
            line = self._pop_line()
            if line is None:
                return
            if not line:
                continue
            if is_urc(line):
                self.urcs.append(Urc(line, time.time()))
            else:
                self.stale_lines_dropped += 1
